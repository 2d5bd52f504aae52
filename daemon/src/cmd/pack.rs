//! `lanseed pack`: a web build folder into a store, as a signed release.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lanseed_protocol::SecretKey;
use lanseed_protocol::capgo::CapgoPrivateKey;
use lanseed_protocol::pack::{PackOptions, pack_scanned, pack_zip, scan_dir};
use lanseed_protocol::store::CommitOutcome;
use lanseed_protocol::zip::{Layout, SafeZip};
use serde::Serialize;

use crate::cli::PackArgs;
use crate::output::{ReleaseView, bytes, print_json};

/// Builds under this size pack too fast for a progress bar to help.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

#[derive(Serialize)]
struct PackView {
    #[serde(flatten)]
    release: ReleaseView,
    files: usize,
    size: u64,
    already_present: bool,
}

pub fn run(args: PackArgs) -> anyhow::Result<()> {
    if !args.source.exists() {
        bail!(
            "{} does not exist; pass the web build folder (e.g. ./dist) or a zip of it",
            args.source.display()
        );
    }
    let key = SecretKey::read(&args.key)?;
    let capgo = args
        .capgo_key
        .as_deref()
        .map(CapgoPrivateKey::read)
        .transpose()?;
    let created = super::now();
    let expires = args
        .expires
        .as_deref()
        .map(|e| parse_expiry(e, created))
        .transpose()?;
    let opts = PackOptions {
        app: args.app,
        channel: args.channel,
        version: args.bundle_version,
        seq: args.seq,
        created,
        min_native_version: args.min_native_version,
        rollout: args.rollout,
        expires,
        notes: args.notes,
        capgo,
    };
    let started = Instant::now();
    let (packed, store) = if args.source.is_file() {
        // Every structural check of the zip runs before the store is touched.
        let zip = SafeZip::open(&args.source, args.zip.limits(), Layout::Bundle)?;
        let store = args.store.create()?;
        let bar = progress_bar(zip.entries().iter().map(|e| e.declared_size).sum());
        let packed = pack_zip(&store, zip, &opts, &key, &|done| bar.set_position(done))?;
        bar.finish_and_clear();
        (packed, store)
    } else {
        // The folder is checked before the store is touched.
        let scanned = scan_dir(&args.source)?;
        let store = args.store.create()?;
        let bar = if std::io::stderr().is_terminal() {
            progress_bar(scanned.total_size())
        } else {
            ProgressBar::hidden()
        };
        let packed = pack_scanned(&store, scanned, &opts, &key, &|done| bar.set_position(done))?;
        bar.finish_and_clear();
        (packed, store)
    };
    let elapsed = started.elapsed();
    let size = packed.manifest.total_size();
    let view = PackView {
        release: ReleaseView::new(&packed.release),
        files: packed.manifest.files().len(),
        size,
        already_present: packed.outcome == CommitOutcome::AlreadyPresent,
    };
    if args.json {
        return print_json(&view);
    }
    let r = &view.release;
    println!(
        "Packed {} {} on {} (seq {}){}",
        r.app,
        r.version,
        r.channel,
        r.seq,
        if view.already_present {
            ", already in the store"
        } else {
            ""
        }
    );
    println!(
        "  bundle   {}  ({} files, {})",
        r.bundle_id,
        view.files,
        bytes(size)
    );
    println!("  release  {}", r.release_id);
    if let Some(c) = &r.capgo {
        println!(
            "  capgo    encrypted for key id {} (payload bundle {})",
            c.key_id, c.bundle_id
        );
    }
    println!("  store    {}", store.root().display());
    let secs = elapsed.as_secs_f64();
    if size >= 1_000_000 {
        let rate = size as f64 / 1e6 / secs.max(1e-6);
        println!("  took     {secs:.2} s ({rate:.0} MB/s)");
    } else {
        println!("  took     {secs:.2} s");
    }
    Ok(())
}

/// A bar on stderr for builds large enough to need one.
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "packing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// An expiry as an RFC 3339 time or a duration from `now`.
fn parse_expiry(text: &str, now: u64) -> anyhow::Result<u64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .context("--expires is before 1970")?
            .as_secs();
        return Ok(secs);
    }
    match humantime::parse_duration(text) {
        Ok(d) => now
            .checked_add(d.as_secs())
            .context("--expires is too far in the future"),
        Err(_) => bail!(
            "--expires `{text}` is neither a time like 2027-01-31T00:00:00Z nor a duration like 30days"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expiry("1h", 1000).unwrap(), 4600);
        assert_eq!(parse_expiry("1970-01-02T00:00:00Z", 0).unwrap(), 86_400);
        assert!(parse_expiry("soon", 0).is_err());
    }
}
