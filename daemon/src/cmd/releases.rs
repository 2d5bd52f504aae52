//! `lanseed releases`: what a store holds.

use crate::cli::ReleasesArgs;
use crate::output::{ReleaseView, print_json};

pub fn run(args: ReleasesArgs) -> anyhow::Result<()> {
    let store = args.store.open()?;
    let mut releases = store.releases()?;
    releases.retain(|r| {
        let rel = r.release();
        args.app.as_ref().is_none_or(|a| &rel.app == a)
            && args.channel.as_ref().is_none_or(|c| &rel.channel == c)
    });
    releases.sort_by(|a, b| {
        let (a, b) = (a.release(), b.release());
        (&a.app, &a.channel, a.seq).cmp(&(&b.app, &b.channel, b.seq))
    });
    let views: Vec<ReleaseView> = releases.iter().map(ReleaseView::new).collect();
    if args.json {
        return print_json(&views);
    }
    if views.is_empty() {
        eprintln!("No releases in {}.", store.root().display());
        return Ok(());
    }
    println!(
        "{:<28} {:<12} {:<12} {:>12} {:<14} {:>8}  CREATED",
        "APP", "CHANNEL", "VERSION", "SEQ", "BUNDLE", "ROLLOUT"
    );
    for v in &views {
        // Releases with Capgo encryption v2 artefacts name the key id.
        let capgo = v
            .capgo
            .as_ref()
            .map(|c| format!("  capgo key {}", c.key_id))
            .unwrap_or_default();
        println!(
            "{:<28} {:<12} {:<12} {:>12} {:<14} {:>7}%  {}{capgo}",
            v.app,
            v.channel,
            v.version,
            v.seq,
            &v.bundle_id[..12],
            v.rollout_percent,
            v.created_at
        );
    }
    Ok(())
}
