//! `lanseed capgo-encrypt`: Capgo encryption v2 artefacts for a release
//! already packed, in a new signed release statement.

use anyhow::bail;
use lanseed_protocol::capgo::CapgoPrivateKey;
use lanseed_protocol::capgo::publish::encrypt_release;
use lanseed_protocol::store::CommitOutcome;
use lanseed_protocol::{SecretKey, SignedRelease};

use crate::cli::CapgoEncryptArgs;
use crate::output::{ReleaseView, print_json};

pub fn encrypt(args: CapgoEncryptArgs) -> anyhow::Result<()> {
    // Both keys are read before the store is touched.
    let capgo = CapgoPrivateKey::read(&args.capgo_key)?;
    let key = SecretKey::read(&args.key)?;
    let store = args.store.open()?;
    let releases = store.releases()?;
    let matching: Vec<&SignedRelease> = releases
        .iter()
        .filter(|r| {
            let r = r.release();
            r.app == args.app
                && r.version == args.bundle_version
                && args.channel.as_ref().is_none_or(|c| &r.channel == c)
        })
        .collect();
    let mut channels: Vec<&str> = matching
        .iter()
        .map(|r| r.release().channel.as_str())
        .collect();
    channels.sort_unstable();
    channels.dedup();
    if channels.len() > 1 {
        bail!(
            "{} {} is on channels {}; pick one with --channel",
            args.app,
            args.bundle_version,
            channels.join(", ")
        );
    }
    let Some(release) = matching.into_iter().max_by_key(|r| r.release().seq) else {
        bail!(
            "the store {} has no release of {} {}{}; `lanseed releases --store {}` lists them",
            store.root().display(),
            args.app,
            args.bundle_version,
            args.channel
                .as_deref()
                .map(|c| format!(" on {c}"))
                .unwrap_or_default(),
            store.root().display()
        );
    };
    let (new, outcome) = encrypt_release(&store, release, &capgo, &key, super::now())?;
    let view = ReleaseView::new(&new);
    if args.json {
        return print_json(&view);
    }
    let c = view
        .capgo
        .as_ref()
        .expect("the new release has a Capgo section");
    println!(
        "Encrypted {} {} on {} for Capgo key id {}: new release seq {}{}",
        view.app,
        view.version,
        view.channel,
        c.key_id,
        view.seq,
        if outcome == CommitOutcome::AlreadyPresent {
            " (already in the store)"
        } else {
            ""
        }
    );
    println!("  bundle   {} (unchanged)", view.bundle_id);
    println!("  payload  {} (the encrypted zip)", c.bundle_id);
    println!("  release  {}", view.release_id);
    Ok(())
}
