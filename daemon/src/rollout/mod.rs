//! `lanseed rollout --waves`: a staged rollout that runs by itself. It
//! raises the channel's share wave by wave, watching the devices table of
//! the node running on the same store (through its control socket), and
//! halts on its own when devices fail the new bundle.
//!
//! The decisions are [`gate`]'s (pure); the progress is [`state`]'s (a
//! file in the store, so a restart resumes the wave); this module is the
//! loop between them: ask the node, decide, sign and commit a statement
//! (the node announces it), print one line per decision.

pub mod gate;
pub mod state;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use lanseed_protocol::release::Rollout;
use lanseed_protocol::rollout as statements;
use lanseed_protocol::{BundleId, SecretKey, SignedRelease, Store};

use self::gate::{Decision, Device, Gate, Tally, Target};
use self::state::{Outcome, WaveState};
use crate::cli::OnHalt;

/// How often the node's devices table is read.
const POLL: Duration = Duration::from_secs(1);

/// A rollout in waves, as asked on the command line.
#[derive(Clone, Debug)]
pub struct Plan {
    /// App id.
    pub app: String,
    /// Channel.
    pub channel: String,
    /// Rising shares.
    pub waves: Vec<Rollout>,
    /// Least time in a wave.
    pub dwell: Duration,
    /// Highest failure rate tolerated.
    pub max_failure_rate: Rollout,
    /// What a halt does besides pausing.
    pub on_halt: OnHalt,
    /// Whether gateway stats count.
    pub count_gateway_stats: bool,
}

/// Checks that the waves rise and start above 0.
pub fn check_waves(waves: &[Rollout]) -> Result<(), String> {
    if waves.is_empty() {
        return Err("--waves needs at least one share, e.g. --waves 5,25,50,100".into());
    }
    if waves[0].basis_points() == 0 {
        return Err("the first wave's share must be above 0 %".into());
    }
    if let Some(w) = waves.windows(2).find(|w| w[1] <= w[0]) {
        return Err(format!(
            "--waves must rise: {} % then {} %",
            w[0].percent(),
            w[1].percent()
        ));
    }
    Ok(())
}

/// The newest statement of the channel.
fn newest<'a>(
    held: &'a [SignedRelease],
    app: &str,
    channel: &str,
) -> Option<&'a lanseed_protocol::release::Release> {
    statements::newest(held, app, channel)
}

/// The version of the newest statement of the channel whose bundle is not
/// `bundle`: what a rollback goes back to.
fn previous_version(
    held: &[SignedRelease],
    app: &str,
    channel: &str,
    bundle: &BundleId,
) -> Option<String> {
    held.iter()
        .map(SignedRelease::release)
        .filter(|r| r.app == app && r.channel == channel && r.bundle_id != *bundle)
        .max_by_key(|r| r.seq)
        .map(|r| r.version.clone())
}

/// Starts or resumes the rollout of `plan` on `store`, signing with `key`;
/// returns when it is done, or an error when it halted.
pub fn run(store: &Store, key: &SecretKey, plan: &Plan) -> anyhow::Result<()> {
    check_waves(&plan.waves).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ask = |store: &Path| runtime.block_on(crate::node::control::request_status(store));
    ask(store.root()).with_context(|| {
        format!(
            "a rollout in waves reads the devices table of the node running on {} (`lanseed seed --store {}`)",
            store.root().display(),
            store.root().display()
        )
    })?;
    let path = state::path(store.root(), &plan.app, &plan.channel);
    let mut st = begin(store, key, plan, &path)?;
    let gate = Gate {
        dwell: st.dwell,
        max_failure_rate: st.max_failure_rate,
    };
    let target = Target {
        app: st.app.clone(),
        channel: st.channel.clone(),
        bundle: st.bundle.parse().context("the rollout state's bundle id")?,
        count_gateway_stats: st.count_gateway_stats,
    };
    let mut last: Option<Tally> = None;
    let mut unreachable = false;
    loop {
        let held = store.releases()?;
        match newest(&held, &st.app, &st.channel) {
            Some(r) if r.bundle_id == target.bundle => {}
            other => {
                st.outcome = Outcome::Superseded;
                state::save(&path, &st)?;
                anyhow::bail!(
                    "{} on {} moved on to {} (published meanwhile): this rollout of {} stops",
                    st.app,
                    st.channel,
                    other.map_or("nothing", |r| r.version.as_str()),
                    st.version
                );
            }
        }
        let devices: Vec<Device> = match ask(store.root()) {
            Ok(status) => {
                if unreachable {
                    println!("the node answers again");
                    unreachable = false;
                }
                serde_json::from_value(status["devices"].clone()).unwrap_or_default()
            }
            Err(e) => {
                if !unreachable {
                    println!("cannot read the node's devices table ({e:#}); trying again");
                    unreachable = true;
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        let now = crate::cmd::now();
        let share = share_of(&st);
        let t = gate::tally(&devices, &target, share, now);
        if last != Some(t) {
            println!(
                "  {} %: {} confirmed, {} failed, {} pending of {} selected{}",
                share.percent(),
                t.confirmed,
                t.failed,
                t.pending(),
                t.selected,
                if t.ignored > 0 {
                    format!(
                        " ({} not counted: unauthenticated or gateway stats)",
                        t.ignored
                    )
                } else {
                    String::new()
                }
            );
            last = Some(t);
        }
        let is_last = st.wave + 1 == st.waves.len();
        match gate::decide(&gate, &t, st.began, now, is_last) {
            Decision::Wait => {}
            Decision::Advance => {
                println!(
                    "wave {} through: {} of {} selected reported ({} confirmed, {} failed) after {} s{}",
                    wave_name(&st),
                    t.confirmed + t.failed,
                    t.selected,
                    t.confirmed,
                    t.failed,
                    now.saturating_sub(st.began),
                    if t.selected == 0 {
                        "; it selected no device"
                    } else {
                        ""
                    }
                );
                st.wave += 1;
                st.began = now;
                set_share(store, key, &st, share_of(&st))?;
                state::save(&path, &st)?;
                announce_wave(&st);
                last = None;
            }
            Decision::Finish => {
                st.outcome = Outcome::Done;
                state::save(&path, &st)?;
                println!(
                    "done: {} on {} % ({} confirmed, {} failed)",
                    st.version,
                    share.percent(),
                    t.confirmed,
                    t.failed
                );
                return Ok(());
            }
            Decision::Halt { lower } => return halt(store, key, &path, &mut st, &t, lower),
        }
        std::thread::sleep(POLL);
    }
}

/// The state to go on from: the saved one when it is a running rollout
/// of the channel's current bundle, else a new one (its first wave's
/// share published).
fn begin(store: &Store, key: &SecretKey, plan: &Plan, path: &Path) -> anyhow::Result<WaveState> {
    let held = store.releases()?;
    let current = newest(&held, &plan.app, &plan.channel).ok_or_else(|| {
        statements::RolloutError::NoRelease {
            app: plan.app.clone(),
            channel: plan.channel.clone(),
        }
    })?;
    let bundle = current.bundle_id.to_string();
    if let Some(mut saved) = state::load(path)? {
        if saved.outcome == Outcome::Running && saved.bundle == bundle {
            // The share published last wins over the saved wave: a stop
            // between the two leaves the statement ahead.
            let published = current.rollout;
            if let Some(j) = saved
                .waves
                .iter()
                .position(|&w| w == published.basis_points())
                && j > saved.wave
            {
                saved.wave = j;
                saved.began = crate::cmd::now();
                state::save(path, &saved)?;
            }
            println!(
                "resuming the rollout of {} on {} saved in the store: wave {}, began {} s ago",
                saved.version,
                saved.channel,
                wave_name(&saved),
                crate::cmd::now().saturating_sub(saved.began)
            );
            if share_of(&saved) != published {
                set_share(store, key, &saved, share_of(&saved))?;
            }
            return Ok(saved);
        }
        if saved.outcome == Outcome::Running {
            println!(
                "the saved rollout of {} was superseded by {}: starting afresh",
                saved.version, current.version
            );
        }
    }
    let first = plan.waves[0];
    if current.rollout > first {
        anyhow::bail!(
            "{} on {} already reaches {} % of devices, more than the first wave's {} %: pack it with --rollout 0 (or at most the first wave's share) to roll it out in waves",
            current.version,
            plan.channel,
            current.rollout.percent(),
            first.percent()
        );
    }
    let on_halt_back_to = match plan.on_halt {
        OnHalt::Pause => None,
        OnHalt::BackTo => Some(
            previous_version(&held, &plan.app, &plan.channel, &current.bundle_id).ok_or_else(
                || {
                    anyhow::anyhow!(
                        "--on-halt back-to: {} on {} has no earlier bundle to go back to",
                        plan.app,
                        plan.channel
                    )
                },
            )?,
        ),
    };
    let st = WaveState {
        app: plan.app.clone(),
        channel: plan.channel.clone(),
        bundle,
        version: current.version.clone(),
        waves: plan.waves.iter().map(|w| w.basis_points()).collect(),
        wave: 0,
        began: crate::cmd::now(),
        dwell: plan.dwell.as_secs(),
        max_failure_rate: plan.max_failure_rate.percent() / 100.0,
        on_halt_back_to,
        count_gateway_stats: plan.count_gateway_stats,
        outcome: Outcome::Running,
    };
    println!(
        "rolling {} (bundle {}) out on {} in waves of {} %; each wave at least {}; halting above {} % failures{}{}",
        st.version,
        &st.bundle[..8],
        st.channel,
        plan.waves
            .iter()
            .map(|w| w.percent().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        humantime::format_duration(plan.dwell),
        plan.max_failure_rate.percent(),
        st.on_halt_back_to
            .as_ref()
            .map_or(String::new(), |v| format!(", then back to {v}")),
        if st.count_gateway_stats {
            "; gateway stats count"
        } else {
            ""
        }
    );
    if current.rollout != first {
        set_share(store, key, &st, first)?;
    }
    state::save(path, &st)?;
    announce_wave(&st);
    Ok(st)
}

fn halt(
    store: &Store,
    key: &SecretKey,
    path: &Path,
    st: &mut WaveState,
    t: &Tally,
    lower: f64,
) -> anyhow::Result<()> {
    let why = format!(
        "{} of {} devices that reported failed {} (95 % lower bound of the failure rate {:.1} % > {} %)",
        t.failed,
        t.confirmed + t.failed,
        st.version,
        lower * 100.0,
        st.max_failure_rate * 100.0
    );
    println!("halting in wave {}: {why}", wave_name(st));
    set_share(
        store,
        key,
        st,
        Rollout::from_basis_points(0).expect("0 is a share"),
    )?;
    println!("  share of {} set to 0 %", st.version);
    if let Some(version) = &st.on_halt_back_to {
        let (r, _) = statements::publish(store, key, |held| {
            statements::back_to(held, &st.app, &st.channel, version, crate::cmd::now())
        })?;
        println!(
            "  {} on {} back to {} (seq {}) for every device",
            st.app,
            st.channel,
            version,
            r.release().seq
        );
    }
    st.outcome = Outcome::Halted { why: why.clone() };
    state::save(path, st)?;
    anyhow::bail!("rollout of {} halted: {why}", st.version)
}

fn share_of(st: &WaveState) -> Rollout {
    Rollout::from_basis_points(st.waves[st.wave]).expect("saved shares are at most 100 %")
}

fn wave_name(st: &WaveState) -> String {
    format!(
        "{}/{} ({} %)",
        st.wave + 1,
        st.waves.len(),
        share_of(st).percent()
    )
}

fn announce_wave(st: &WaveState) {
    println!("wave {} begins", wave_name(st));
}

/// Signs and commits the channel's current bundle with `share`, as long
/// as it is still the bundle rolled out.
fn set_share(store: &Store, key: &SecretKey, st: &WaveState, share: Rollout) -> anyhow::Result<()> {
    let bundle: BundleId = st.bundle.parse().context("the rollout state's bundle id")?;
    statements::publish(store, key, |held| {
        statements::with_share_of(
            held,
            &st.app,
            &st.channel,
            &bundle,
            share,
            crate::cmd::now(),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(p: &[u16]) -> Vec<Rollout> {
        p.iter()
            .map(|&p| Rollout::from_basis_points(p * 100).unwrap())
            .collect()
    }

    #[test]
    fn waves_must_rise_from_above_zero() {
        assert!(check_waves(&shares(&[5, 25, 50, 100])).is_ok());
        assert!(check_waves(&shares(&[100])).is_ok());
        assert!(check_waves(&[]).unwrap_err().contains("at least one"));
        assert!(
            check_waves(&shares(&[0, 50]))
                .unwrap_err()
                .contains("above 0")
        );
        assert!(
            check_waves(&shares(&[25, 25]))
                .unwrap_err()
                .contains("must rise")
        );
        assert!(
            check_waves(&shares(&[50, 10]))
                .unwrap_err()
                .contains("must rise")
        );
    }
}
