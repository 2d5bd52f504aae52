//! `lanseed export`, `lanseed import` and `lanseed publish-static`: moving
//! releases as files.

use anyhow::{Context, bail};
use lanseed_protocol::store::CommitOutcome;
use lanseed_protocol::{SignedRelease, Store, TrustList, capgo, release_file, static_tree};
use serde::Serialize;

use crate::cli::{ExportArgs, ImportArgs, PublishStaticArgs};
use crate::output::{ReleaseView, bytes, print_json};

/// The release of `app` that `selector` names: the newest release on a
/// channel of that name, else the newest release with that version.
fn select(store: &Store, app: &str, selector: &str) -> anyhow::Result<SignedRelease> {
    let releases = store.releases()?;
    let of_app = releases.iter().filter(|r| r.release().app == app);
    let newest = |pick: &dyn Fn(&&SignedRelease) -> bool| {
        of_app
            .clone()
            .filter(pick)
            .max_by_key(|r| r.release().seq)
            .cloned()
    };
    if let Some(r) = newest(&|r| r.release().channel == selector) {
        return Ok(r);
    }
    if let Some(r) = newest(&|r| r.release().version == selector) {
        return Ok(r);
    }
    if of_app.clone().next().is_none() {
        bail!(
            "the store {} has no release of {app}",
            store.root().display()
        );
    }
    bail!(
        "{app} has no channel and no version called `{selector}`; `lanseed releases --app {app}` lists them"
    )
}

#[derive(Serialize)]
struct ExportView {
    #[serde(flatten)]
    release: ReleaseView,
    file: String,
    file_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let release = select(&store, &args.app, &args.selector)?;
    let (sha256, summary) = if args.capgo {
        let Some(served) = capgo::payload::served(&store, &release)? else {
            let r = release.release();
            bail!(
                "{} {} ({}) has no Capgo artefacts; add them with `lanseed capgo-encrypt {} {} --capgo-key FILE`",
                r.app,
                r.version,
                r.channel,
                r.app,
                r.version
            );
        };
        let _guard = store.read_guard()?;
        std::fs::copy(&served.path, &args.out)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        (
            Some(hex_lower(&served.sha256)),
            String::from("Capgo-encrypted zip"),
        )
    } else if args.zip {
        let sha = release_file::export_bundle_zip(&store, &release.release().bundle_id, &args.out)?;
        (Some(hex_lower(&sha)), String::from("bundle zip"))
    } else {
        let e = release_file::export(&store, &release, &args.out)?;
        (
            None,
            format!("release file: {} files, {}", e.blobs, bytes(e.bytes)),
        )
    };
    let file_size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    let view = ExportView {
        release: ReleaseView::new(&release),
        file: args.out.display().to_string(),
        file_size,
        sha256,
    };
    if args.json {
        return print_json(&view);
    }
    let r = &view.release;
    println!(
        "Exported {} {} ({}, seq {}) to {} ({summary}; {} on disk)",
        r.app,
        r.version,
        r.channel,
        r.seq,
        view.file,
        bytes(file_size)
    );
    if let Some(sha) = &view.sha256 {
        println!("  sha256 {sha}");
    }
    if let (true, Some(c)) = (args.capgo, &r.capgo) {
        println!("  session_key {}", c.session_key);
        println!("  checksum    {}", c.checksum);
        println!("  key_id      {}", c.key_id);
    }
    Ok(())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize)]
struct ImportView {
    #[serde(flatten)]
    release: ReleaseView,
    files: usize,
    bytes: u64,
    already_present: bool,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let trust = TrustList::read(&args.trust)?;
    // Verified before the store is touched.
    let file = release_file::ReleaseFile::open(&args.file, &trust, args.zip.limits())?;
    let store = args.store.create()?;
    let imported = file.import(&store)?;
    let view = ImportView {
        release: ReleaseView::new(&imported.release),
        files: imported.blobs,
        bytes: imported.bytes,
        already_present: imported.outcome == CommitOutcome::AlreadyPresent,
    };
    if args.json {
        return print_json(&view);
    }
    let r = &view.release;
    println!(
        "Imported {} {} ({}, seq {}) into {}: {} files, {}{}",
        r.app,
        r.version,
        r.channel,
        r.seq,
        store.root().display(),
        view.files,
        bytes(view.bytes),
        if view.already_present {
            " (already there)"
        } else {
            ""
        }
    );
    Ok(())
}

#[derive(Serialize)]
struct PublishView {
    out: String,
    releases: usize,
    blobs_written: usize,
    blobs_compressed: usize,
    bytes_written: u64,
}

pub fn publish_static(args: PublishStaticArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let p = static_tree::publish(&store, &args.out)?;
    let view = PublishView {
        out: args.out.display().to_string(),
        releases: p.releases,
        blobs_written: p.blobs_written,
        blobs_compressed: p.blobs_compressed,
        bytes_written: p.bytes_written,
    };
    if args.json {
        return print_json(&view);
    }
    println!(
        "Published {} releases to {}: {} new blobs ({} compressed), {}",
        view.releases,
        view.out,
        view.blobs_written,
        view.blobs_compressed,
        bytes(view.bytes_written)
    );
    Ok(())
}
