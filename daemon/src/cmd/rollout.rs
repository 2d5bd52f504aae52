//! `lanseed rollout`: a new share of devices for a channel's current
//! bundle, or back to an older bundle, as a new signed statement; or a
//! rollout in waves (the `rollout` module).

use lanseed_protocol::SecretKey;
use lanseed_protocol::rollout;
use lanseed_protocol::store::CommitOutcome;

use crate::cli::RolloutArgs;
use crate::output::{ReleaseView, print_json};

pub fn run(args: RolloutArgs) -> anyhow::Result<()> {
    let key = SecretKey::read(&args.key)?;
    let store = args.store.open()?;
    if let Some(waves) = &args.waves {
        let plan = crate::rollout::Plan {
            app: args.app.clone(),
            channel: args.channel.clone(),
            waves: waves.clone(),
            dwell: args.dwell,
            max_failure_rate: args.max_failure_rate,
            on_halt: args.on_halt,
            count_gateway_stats: args.count_gateway_stats,
        };
        return crate::rollout::run(&store, &key, &plan);
    }
    let now = super::now();
    let (app, channel) = (args.app.as_str(), args.channel.as_str());
    let (release, outcome) = match (&args.percent, &args.back_to) {
        (Some(share), _) => rollout::publish(&store, &key, |held| {
            rollout::with_share(held, app, channel, *share, now)
        })?,
        (None, Some(version)) => rollout::publish(&store, &key, |held| {
            rollout::back_to(held, app, channel, version, now)
        })?,
        (None, None) => anyhow::bail!("pass --percent P or --back-to VERSION"),
    };
    let view = ReleaseView::new(release.signed());
    if args.json {
        return print_json(&view);
    }
    let r = release.release();
    let what = match &args.back_to {
        Some(_) => format!("back to {} for every device", r.version),
        None if r.rollout.basis_points() == 0 => format!("{} paused (0 %)", r.version),
        None => format!("{} to {} % of devices", r.version, r.rollout.percent()),
    };
    let note = if outcome == CommitOutcome::AlreadyPresent {
        " (already in the store)"
    } else {
        ""
    };
    println!("{app} on {channel}: {what}{note}");
    println!("  seq      {}", r.seq);
    println!("  bundle   {}", r.bundle_id);
    println!("  release  {}", view.release_id);
    println!(
        "  a node running on {} announces it to its peers",
        store.root().display()
    );
    Ok(())
}
