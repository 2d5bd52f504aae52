//! `lanseed store verify` and `lanseed store gc`.

use anyhow::bail;
use lanseed_protocol::TrustList;
use lanseed_protocol::store::GcOptions;
use serde::Serialize;

use crate::cli::{GcArgs, VerifyArgs};
use crate::output::{ReleaseView, bytes, print_json};

#[derive(Serialize)]
struct VerifyView {
    ok: bool,
    releases: usize,
    manifests: usize,
    blobs: usize,
    bytes: u64,
    unreferenced_blobs: usize,
    leftovers: usize,
    problems: Vec<String>,
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let trust = args.trust.as_deref().map(TrustList::read).transpose()?;
    let report = store.verify(trust.as_ref(), &|_| {})?;
    let view = VerifyView {
        ok: report.is_ok(),
        releases: report.releases,
        manifests: report.manifests,
        blobs: report.blobs,
        bytes: report.bytes,
        unreferenced_blobs: report.unreferenced_blobs,
        leftovers: report.leftovers,
        problems: report.problems.iter().map(ToString::to_string).collect(),
    };
    if args.json {
        print_json(&view)?;
    } else {
        for p in &view.problems {
            println!("problem: {p}");
        }
        println!(
            "{} releases, {} manifests, {} blobs ({}) checked{}{}",
            view.releases,
            view.manifests,
            view.blobs,
            bytes(view.bytes),
            if view.unreferenced_blobs > 0 {
                format!(
                    "; {} blobs unused (`lanseed store gc` removes them)",
                    view.unreferenced_blobs
                )
            } else {
                String::new()
            },
            if view.leftovers > 0 {
                format!("; {} leftovers of interrupted writes", view.leftovers)
            } else {
                String::new()
            },
        );
    }
    if !view.ok {
        bail!(
            "store {} has {} problem(s); re-import or re-fetch the damaged releases, then run `lanseed store gc`",
            store.root().display(),
            view.problems.len()
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct GcView {
    dry_run: bool,
    kept: usize,
    dropped: Vec<ReleaseView>,
    manifests_removed: usize,
    blobs_removed: usize,
    bytes_freed: u64,
    leftovers_removed: usize,
    /// Entries of the Capgo gateway's cache (zips, Brotli variants).
    cache_removed: usize,
}

pub fn gc(args: GcArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let report = store.gc(GcOptions {
        keep: args.keep,
        dry_run: args.dry_run,
    })?;
    let view = GcView {
        dry_run: args.dry_run,
        kept: report.kept,
        dropped: report.dropped.iter().map(ReleaseView::new).collect(),
        manifests_removed: report.manifests_removed,
        blobs_removed: report.blobs_removed,
        bytes_freed: report.bytes_freed,
        leftovers_removed: report.leftovers_removed,
        cache_removed: report.cache_removed,
    };
    if args.json {
        return print_json(&view);
    }
    let verb = if args.dry_run {
        "Would drop"
    } else {
        "Dropped"
    };
    for r in &view.dropped {
        println!(
            "{verb} {} {} on {} (seq {})",
            r.app, r.version, r.channel, r.seq
        );
    }
    println!(
        "{} {} releases, kept {}; {} {} manifests and {} blobs ({}), {} leftovers, {} gateway cache entries",
        verb,
        view.dropped.len(),
        view.kept,
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        view.manifests_removed,
        view.blobs_removed,
        bytes(view.bytes_freed),
        view.leftovers_removed,
        view.cache_removed
    );
    Ok(())
}
