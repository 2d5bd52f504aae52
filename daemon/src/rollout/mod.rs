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
use lanseed_protocol::rollout::{self as statements, newest};
use lanseed_protocol::{BundleId, Release, SecretKey, SignedRelease, Store};

use self::gate::{Decision, Device, Gate, Tally, Target};
use self::state::{Outcome, WaveState};
use crate::cli::OnHalt;

/// How often the node's devices table is read.
const POLL: Duration = Duration::from_secs(2);
/// Pending devices listed in a line at most.
const LISTED: usize = 10;

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

/// The version a rollback goes back to: the newest statement of the
/// channel, of another bundle, that reached every device (not an earlier
/// rollout that was paused or halted).
fn previous_version(
    held: &[SignedRelease],
    app: &str,
    channel: &str,
    bundle: &BundleId,
) -> Option<String> {
    held.iter()
        .map(SignedRelease::release)
        .filter(|r| {
            r.app == app
                && r.channel == channel
                && r.bundle_id != *bundle
                && r.rollout == Rollout::FULL
        })
        .max_by_key(|r| r.seq)
        .map(|r| r.version.clone())
}

/// The node's status, read as the gate needs it.
struct NodeView {
    devices: Vec<Device>,
    authenticated_reports: bool,
}

fn read_node(runtime: &tokio::runtime::Runtime, store: &Path) -> anyhow::Result<NodeView> {
    let status = runtime.block_on(crate::node::control::request_status(store))?;
    let devices = serde_json::from_value(status["devices"].clone()).map_err(|e| {
        anyhow::anyhow!(
            "the node on {} gave a devices table this lanseed cannot read ({e}): is it an older version? Restart it with this one",
            store.display()
        )
    })?;
    Ok(NodeView {
        devices,
        authenticated_reports: status["authenticated_reports"].as_bool().unwrap_or(false),
    })
}

/// Holds `rollouts/<app>@<channel>.lock` while a rollout runs.
fn lock(path: &Path, app: &str, channel: &str) -> anyhow::Result<std::fs::File> {
    let lock = path.with_extension("lock");
    std::fs::create_dir_all(lock.parent().unwrap_or(Path::new(".")))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .with_context(|| format!("cannot open {}", lock.display()))?;
    if file.try_lock().is_err() {
        anyhow::bail!(
            "another `lanseed rollout --waves` of {app} on {channel} is running on this store; stop it first"
        );
    }
    Ok(file)
}

/// Starts or resumes the rollout of `plan` on `store`, signing with `key`;
/// returns when it is done, or an error when it halted or stopped.
pub fn run(store: &Store, key: &SecretKey, plan: &Plan) -> anyhow::Result<()> {
    check_waves(&plan.waves).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let node = read_node(&runtime, store.root()).with_context(|| {
        format!(
            "a rollout in waves reads the devices table of the node running on {} (`lanseed seed --store {}`)",
            store.root().display(),
            store.root().display()
        )
    })?;
    if !node.authenticated_reports && !plan.count_gateway_stats {
        anyhow::bail!(
            "the node on {} runs without --fleet-key: no device's report is authenticated, so the health gate would count nothing and the waves would only wait out their dwell. Run the fleet with a fleet key (or count the Capgo gateway's stats with --count-gateway-stats, which trusts the LAN)",
            store.root().display()
        );
    }
    let path = state::path(store.root(), &plan.app, &plan.channel);
    let _lock = lock(&path, &plan.app, &plan.channel)?;
    let Some(mut st) = begin(store, key, plan, &path)? else {
        return Ok(());
    };
    let gate = Gate {
        dwell: st.dwell,
        max_failure_rate: st.max_failure_rate,
    };
    let held = store.releases()?;
    let target = Target {
        app: st.app.clone(),
        channel: st.channel.clone(),
        bundle: st.bundle.parse().context("the rollout state's bundle id")?,
        min_native_version: newest(&held, &st.app, &st.channel)
            .and_then(|r| r.min_native_version.clone()),
        count_gateway_stats: st.count_gateway_stats,
    };
    let mut last: Option<Tally> = None;
    let mut listed_pending = false;
    let mut unreachable = false;
    loop {
        let held = store.releases()?;
        let current = newest(&held, &st.app, &st.channel);
        let moved = match current {
            Some(r) if r.bundle_id != target.bundle => Some(format!(
                "{} on {} moved on to {} (published meanwhile)",
                st.app, st.channel, r.version
            )),
            Some(r) if r.rollout != share_of(&st) => Some(format!(
                "the share of {} was set to {} % by hand (not by this rollout)",
                st.version,
                r.rollout.percent()
            )),
            Some(_) => None,
            None => Some(format!(
                "{} on {} has no release any more",
                st.app, st.channel
            )),
        };
        if let Some(why) = moved {
            st.outcome = Outcome::Superseded { why: why.clone() };
            state::save(&path, &st)?;
            anyhow::bail!(
                "{why}: this rollout of {} stops (run it again to start afresh)",
                st.version
            );
        }
        let node = match read_node(&runtime, store.root()) {
            Ok(node) => {
                if unreachable {
                    println!("the node answers again");
                    unreachable = false;
                }
                node
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
        if gate::remember(&mut st.devices, &node.devices, &target, now) {
            state::save(&path, &st)?;
        }
        let share = share_of(&st);
        let (t, pending) = gate::tally(&node.devices, &st.devices, &target, share, now);
        if last != Some(t) {
            println!(
                "  {} %: {} confirmed, {} failed, {} pending of {} selected{}{}",
                share.percent(),
                t.confirmed,
                t.failed,
                t.pending(),
                t.selected,
                if t.too_old > 0 {
                    format!(
                        " ({} more with a native app below {})",
                        t.too_old,
                        target.min_native_version.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                },
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
            Decision::Wait => {
                if !listed_pending && now >= st.began + st.dwell && !pending.is_empty() {
                    println!(
                        "  dwell over; waiting for {}{}",
                        pending
                            .iter()
                            .take(LISTED)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                        if pending.len() > LISTED {
                            format!(" and {} more", pending.len() - LISTED)
                        } else {
                            String::new()
                        }
                    );
                    listed_pending = true;
                }
            }
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
                // Published first, then saved: a stop in between leaves
                // the statement ahead, which `begin` picks up.
                set_share(
                    store,
                    key,
                    &st,
                    Rollout::from_basis_points(st.waves[st.wave + 1])
                        .expect("saved shares are at most 100 %"),
                )?;
                st.wave += 1;
                st.began = now;
                state::save(&path, &st)?;
                announce_wave(&st);
                last = None;
                listed_pending = false;
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
            Decision::Halt { lower } => {
                let why = format!(
                    "{} of {} devices that reported failed {} (95 % lower bound of the failure rate {:.1} % > {:.2} %)",
                    t.failed,
                    t.confirmed + t.failed,
                    st.version,
                    lower * 100.0,
                    st.max_failure_rate * 100.0
                );
                println!("halting in wave {}: {why}", wave_name(&st));
                // Saved before anything is published: a stop midway is
                // finished by the next run, never undone.
                st.outcome = Outcome::Halted { why };
                state::save(&path, &st)?;
                return halt(store, key, &st);
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The state to go on from: the saved one when it is a running rollout
/// of the channel's current bundle, else a new one (its first wave's
/// share published). `None` when the saved rollout of this bundle is
/// done already.
fn begin(
    store: &Store,
    key: &SecretKey,
    plan: &Plan,
    path: &Path,
) -> anyhow::Result<Option<WaveState>> {
    let held = store.releases()?;
    let current = newest(&held, &plan.app, &plan.channel).ok_or_else(|| {
        statements::RolloutError::NoRelease {
            app: plan.app.clone(),
            channel: plan.channel.clone(),
        }
    })?;
    let bundle = current.bundle_id.to_string();
    if let Some(saved) = state::load(path)?.filter(|s| s.bundle == bundle) {
        match &saved.outcome {
            Outcome::Running => return resume(plan, path, saved, current).map(Some),
            Outcome::Done => {
                println!(
                    "the rollout of {} on {} is done already ({} %)",
                    saved.version,
                    saved.channel,
                    share_of(&saved).percent()
                );
                return Ok(None);
            }
            Outcome::Halted { why } => {
                println!("the rollout of {} halted: {why}", saved.version);
                halt(store, key, &saved)?;
            }
            Outcome::Superseded { .. } => {}
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
            previous_version(&held, &plan.app, &plan.channel, &current.bundle_id).ok_or_else(|| {
                anyhow::anyhow!(
                    "--on-halt back-to: {} on {} has no earlier bundle that reached every device to go back to",
                    plan.app,
                    plan.channel
                )
            })?,
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
        devices: Default::default(),
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
    Ok(Some(st))
}

/// Goes on with a running rollout saved in the store.
fn resume(
    plan: &Plan,
    path: &Path,
    mut saved: WaveState,
    current: &Release,
) -> anyhow::Result<WaveState> {
    let published = current.rollout.basis_points();
    match saved.waves.iter().position(|&w| w == published) {
        // A stop between publishing a wave and saving it: the statement
        // is ahead, and that wave begins now.
        Some(j) if j > saved.wave => {
            saved.wave = j;
            saved.began = crate::cmd::now();
            state::save(path, &saved)?;
        }
        Some(j) if j == saved.wave => {}
        _ => {
            let why = format!(
                "the share of {} was set to {} % by hand while this rollout was stopped",
                saved.version,
                current.rollout.percent()
            );
            saved.outcome = Outcome::Superseded { why: why.clone() };
            state::save(path, &saved)?;
            anyhow::bail!("{why}: the saved rollout stops (run it again to start afresh)");
        }
    }
    let same = saved.waves
        == plan
            .waves
            .iter()
            .map(|w| w.basis_points())
            .collect::<Vec<_>>()
        && saved.dwell == plan.dwell.as_secs()
        && saved.count_gateway_stats == plan.count_gateway_stats
        && (saved.max_failure_rate - plan.max_failure_rate.percent() / 100.0).abs() < 1e-9
        && saved.on_halt_back_to.is_some() == (plan.on_halt == OnHalt::BackTo);
    println!(
        "resuming the rollout of {} on {} saved in the store: wave {}, began {} s ago{}",
        saved.version,
        saved.channel,
        wave_name(&saved),
        crate::cmd::now().saturating_sub(saved.began),
        if same {
            ""
        } else {
            " (with its saved waves, dwell and gate: the command line's differ)"
        }
    );
    Ok(saved)
}

/// Carries out a halt saved in `st` (again, when a stop interrupted it:
/// each step is skipped when done), then fails with its reason.
fn halt(store: &Store, key: &SecretKey, st: &WaveState) -> anyhow::Result<()> {
    let bundle: BundleId = st.bundle.parse().context("the rollout state's bundle id")?;
    let held = store.releases()?;
    let zero = Rollout::from_basis_points(0).expect("0 is a share");
    if newest(&held, &st.app, &st.channel)
        .is_some_and(|r| r.bundle_id == bundle && r.rollout != zero)
    {
        set_share(store, key, st, zero)?;
        println!("  share of {} set to 0 %", st.version);
    }
    if let Some(version) = &st.on_halt_back_to {
        let held = store.releases()?;
        if newest(&held, &st.app, &st.channel).is_some_and(|r| r.bundle_id == bundle) {
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
    }
    let why = match &st.outcome {
        Outcome::Halted { why } => why.as_str(),
        _ => "halted",
    };
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
