//! The demo, step by step: keys and releases; a seeder and three device
//! agents on loopback with their pages open; v1 published and confirmed
//! everywhere; a broken v2 rolled back everywhere; v3 everywhere; the
//! report. Progress goes to stderr; the report to stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::app::{APP, Build, READY_SCRIPT};
use super::confirm::{self, ConfirmWith, Confirmer, Page};
use super::ctl::Ctl;
use super::discovery::Discovery;
use super::error::DemoError;
use super::logs;
use super::nodes::{LISTEN, Nodes, Role};
use super::publish;
use super::report::{self, DeviceLines, NodeView, Outcome, Report};
use crate::output::bytes;

/// Device agents started.
pub const DEVICES: usize = 3;

/// The devices' `--app-ready-timeout`: short, so the rollback is quick,
/// with room for a browser on a busy two-core machine.
pub const APP_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a release may take to settle on every device.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the nodes may take to connect, and the pages to open.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user asked for.
pub struct Options {
    /// The folder to run in.
    pub dir: PathBuf,
    /// Whether it is kept afterwards.
    pub dir_kept: bool,
    /// Print the report as JSON.
    pub json: bool,
    /// Leave the devices serving until interrupted.
    pub keep: bool,
    /// Who confirms.
    pub confirm_with: ConfirmWith,
}

/// Runs the demo in `opts.dir`, prints the report, and stops everything
/// it started (with `--keep`, after SIGINT or SIGTERM).
pub fn run(opts: &Options, ctl: &Ctl) -> Result<(), DemoError> {
    let dir = opts.dir.as_path();
    let (confirmer, browser) = confirm::choose(opts.confirm_with, confirm::find_chromium())?;
    let discovery = Discovery::detect();

    say(format!(
        "1/6 keys, and the example app packed as three signed releases (in {})",
        dir.display()
    ));
    let keys = publish::keys(dir)?;
    let builtin = publish::write_build(dir, Build::Builtin)?;
    let releases = Build::PUBLISHED
        .iter()
        .map(|b| publish::pack(dir, &keys, *b))
        .collect::<Result<Vec<_>, _>>()?;
    for r in &releases {
        let p = &r.published;
        say(format!(
            "    {APP} {} seq {}: bundle {}… ({} files, {}){}",
            p.version,
            p.seq,
            &p.bundle_id[..12],
            p.files,
            bytes(p.bundle_bytes),
            if p.healthy {
                String::new()
            } else {
                format!(", broken: lacks {READY_SCRIPT}")
            }
        ));
    }

    say(format!(
        "2/6 a seeder and {DEVICES} device agents on 127.0.0.1. {} The seeder serves one peer at a time (--max-uploads 1, as a publisher on a slow uplink would): the devices pass each release on to each other.",
        discovery.describe()
    ));
    let mut nodes = Nodes::default();
    start_nodes(&mut nodes, ctl, dir, discovery, &keys, &builtin)?;
    let pages = open_pages(&mut nodes, ctl, dir, confirmer, browser.as_deref())?;

    let names: BTreeMap<String, String> = nodes
        .list
        .iter()
        .map(|n| (n.peer_id.clone(), n.name.clone()))
        .collect();
    let seeder_store = nodes.seeder().map(|s| s.store.clone()).unwrap_or_default();
    let mut steps = Vec::new();
    let mut good = lanseed_client::state::BUILTIN.to_owned();
    for (i, release) in releases.iter().enumerate() {
        let p = &release.published;
        say(format!(
            "{}/6 publishing {} {}{}",
            i + 3,
            APP,
            p.version,
            if p.healthy {
                String::new()
            } else {
                format!(" (broken: its page loads {READY_SCRIPT}, which the bundle lacks)")
            }
        ));
        let step = publish_step(ctl, &mut nodes, release, &keys, &names, &good)?;
        say(format!(
            "    {}: every device ran it within {:.2} s, {} within {:.2} s; {} moved",
            match step.outcome {
                Outcome::Confirmed => "installed",
                Outcome::RolledBack => "rolled back",
                Outcome::Unknown => "unsettled",
            },
            step.reached_all_secs,
            if p.healthy {
                "confirmed"
            } else {
                "rolled back"
            },
            step.settled_all_secs,
            bytes(step.bytes)
        ));
        if p.healthy {
            good = p.bundle_id.clone();
        }
        steps.push(step);
    }

    say("6/6 the report".to_owned());
    wait_for_table(ctl, &nodes, &good)?;
    let report = Report {
        dir: dir.display().to_string(),
        dir_kept: opts.dir_kept,
        app: APP.to_owned(),
        discovery,
        discovery_note: discovery.describe(),
        confirmer,
        browser: browser.map(|b| b.display().to_string()),
        app_ready_timeout_secs: APP_READY_TIMEOUT.as_secs_f64(),
        nodes: node_views(ctl, &mut nodes)?,
        steps,
    };
    if opts.json {
        crate::output::print_json(&report).map_err(|e| DemoError::Io {
            what: "cannot print the report to",
            path: PathBuf::from("stdout"),
            source: std::io::Error::other(e.to_string()),
        })?;
    } else {
        print!("{}", report::render(&report));
    }
    if opts.keep {
        say("The devices keep serving; open their pages (Ctrl-C stops everything):".into());
        for d in nodes.devices() {
            say(format!("    {} {}", d.name, d.url().unwrap_or_default()));
        }
        say(format!(
            "Publish another build to them: lanseed pack YOUR_BUILD_FOLDER --app {APP} --version 4.0.0 --key {} --store {}",
            dir.join("publisher/publisher.key").display(),
            seeder_store.display()
        ));
        ctl.until_interrupted();
    }
    drop(pages);
    nodes.stop();
    say(if opts.dir_kept {
        format!("Stopped every node; everything is in {}", dir.display())
    } else {
        "Stopped every node.".to_owned()
    });
    Ok(())
}

/// Opens every device's page (Chromium or the page driver) and waits
/// until each is live: the builtin page ran its scripts (its app.js
/// called notifyAppReady), so it follows the device from then on.
fn open_pages(
    nodes: &mut Nodes,
    ctl: &Ctl,
    dir: &Path,
    confirmer: Confirmer,
    browser: Option<&Path>,
) -> Result<Vec<Page>, DemoError> {
    let mut pages = Vec::new();
    for d in nodes.devices() {
        let serve = d.serve.ok_or_else(|| DemoError::Unexpected {
            what: format!("{} did not say where it serves its page", d.name),
            log: d.log.clone(),
        })?;
        pages.push(Page::open(confirmer, browser, serve, &dir.join(&d.name))?);
    }
    ctl.wait("every device's page opening", SETUP_TIMEOUT, || {
        nodes.check_alive()?;
        Ok(nodes
            .devices()
            .all(|d| d.log_text().contains("notifyAppReady bundle=builtin"))
            .then_some(()))
    })?;
    for d in nodes.devices() {
        say(format!(
            "    {} {} serving {}, page open in {}",
            d.name,
            d.url().unwrap_or_default(),
            Build::Builtin.version(),
            match confirmer {
                Confirmer::Chromium => "headless Chromium",
                Confirmer::PageDriver => "the built-in page driver",
            }
        ));
    }
    Ok(pages)
}

/// Publishes `release` to the seeder, waits until every device is done
/// with it (confirmed, or rolled back to `good`), and reads what happened
/// from the devices' logs and the nodes' upload counters.
fn publish_step(
    ctl: &Ctl,
    nodes: &mut Nodes,
    release: &publish::Release,
    keys: &publish::Keys,
    names: &BTreeMap<String, String>,
    good: &str,
) -> Result<report::Step, DemoError> {
    let p = &release.published;
    let seeder_store = nodes.seeder().map(|s| s.store.clone()).unwrap_or_default();
    let before = uploads(ctl, nodes)?;
    let offsets: Vec<u64> = nodes.devices().map(|d| d.log_len()).collect();
    let at = SystemTime::now();
    publish::publish(release, keys, &seeder_store)?;
    ctl.wait(
        &format!("every device settling on {}", p.version),
        STEP_TIMEOUT,
        || settled_everywhere(ctl, nodes, p, good),
    )?;
    let after = uploads(ctl, nodes)?;
    let lines: Vec<DeviceLines> = nodes
        .devices()
        .zip(&offsets)
        .map(|(d, from)| DeviceLines {
            name: d.name.clone(),
            lines: logs::parse_all(&d.log_since(*from)),
        })
        .collect();
    let published = report::Published { at, ..p.clone() };
    Ok(report::build_step(
        &published, &lines, names, &before, &after,
    ))
}

/// `Some` once every device is done with `p` (see [`settled`]); an error
/// when a healthy release was rolled back.
fn settled_everywhere(
    ctl: &Ctl,
    nodes: &mut Nodes,
    p: &report::Published,
    good: &str,
) -> Result<Option<()>, DemoError> {
    nodes.check_alive()?;
    let mut all = true;
    for d in nodes.devices() {
        let Some(state) = ctl.device(&d.store) else {
            all = false;
            continue;
        };
        if p.healthy && failed(&state, &p.bundle_id) {
            let secs = APP_READY_TIMEOUT.as_secs();
            return Err(DemoError::Unexpected {
                what: format!(
                    "{} rolled back {}, a healthy release (did its page not confirm within {secs} s?)",
                    d.name, p.version
                ),
                log: d.log.clone(),
            });
        }
        all &= settled(&state, &p.bundle_id, p.healthy, good);
    }
    Ok(all.then_some(()))
}

/// Waits until the seeder's devices table shows every device confirmed
/// on `bundle` (the devices' reports reached it).
fn wait_for_table(ctl: &Ctl, nodes: &Nodes, bundle: &str) -> Result<(), DemoError> {
    let device_ids: Vec<String> = nodes.devices().map(|d| d.name.clone()).collect();
    ctl.wait(
        "the seeder's devices table showing every device on the last release",
        SETUP_TIMEOUT,
        || {
            let Some(s) = nodes.seeder().and_then(|s| ctl.status(&s.store)) else {
                return Ok(None);
            };
            Ok(device_ids
                .iter()
                .all(|id| table_shows(&s, id, bundle))
                .then_some(()))
        },
    )
}

/// Starts the seeder, then the devices, each told of the nodes before it
/// where mDNS cannot run, and waits until every node is connected to
/// every other.
fn start_nodes(
    nodes: &mut Nodes,
    ctl: &Ctl,
    dir: &Path,
    discovery: Discovery,
    keys: &publish::Keys,
    builtin: &Path,
) -> Result<(), DemoError> {
    let path = |p: &Path| p.display().to_string();
    let common = |earlier: &[String]| {
        let mut args = vec![
            "--fleet-key".to_owned(),
            path(&keys.fleet),
            "--listen".into(),
            LISTEN.into(),
        ];
        args.extend(discovery.node_args(earlier));
        args
    };
    // One peer at a time, as from a publisher on a slow uplink: the
    // others are told it is busy and fetch from the devices that have
    // the release, which seed it while they fetch.
    let mut seeder = common(&[]);
    seeder.extend(["--max-uploads".to_owned(), "1".to_owned()]);
    nodes.start(ctl, dir, "seeder", Role::Seeder, &seeder)?;
    for i in 1..=DEVICES {
        let name = format!("kiosk-{i}");
        let earlier: Vec<String> = nodes
            .list
            .iter()
            .flat_map(|n| n.p2p_addrs.clone())
            .collect();
        let mut args = vec![
            "--app".to_owned(),
            APP.into(),
            "--trust".into(),
            path(&keys.trust),
            "--builtin".into(),
            path(builtin),
            "--serve".into(),
            "127.0.0.1:0".into(),
            "--apply".into(),
            "immediate".into(),
            "--app-ready-timeout".into(),
            format!("{}s", APP_READY_TIMEOUT.as_secs()),
            "--device-id".into(),
            name.clone(),
        ];
        args.extend(common(&earlier));
        nodes.start(ctl, dir, &name, Role::Device, &args)?;
    }
    let others = nodes.list.len() - 1;
    ctl.wait("the nodes connecting to each other", SETUP_TIMEOUT, || {
        nodes.check_alive()?;
        Ok(nodes
            .list
            .iter()
            .all(|n| {
                ctl.status(&n.store)
                    .is_some_and(|s| connected_peers(&s) >= others)
            })
            .then_some(()))
    })
}

/// Each node's upload counters now: `(name, bytes, answers)`.
fn uploads(ctl: &Ctl, nodes: &mut Nodes) -> Result<Vec<(String, u64, u64)>, DemoError> {
    let mut out = Vec::new();
    for i in 0..nodes.list.len() {
        let store = nodes.list[i].store.clone();
        let s = ctl.wait(
            &format!("{} answering", nodes.list[i].name),
            SETUP_TIMEOUT,
            || {
                nodes.check_alive()?;
                Ok(ctl.status(&store))
            },
        )?;
        let up = &s["uploads"];
        out.push((
            nodes.list[i].name.clone(),
            up["bytes"].as_u64().unwrap_or(0),
            up["answers"].as_u64().unwrap_or(0),
        ));
    }
    Ok(out)
}

/// Every node as the report shows it, from its status and, for a device,
/// its state.
fn node_views(ctl: &Ctl, nodes: &mut Nodes) -> Result<Vec<NodeView>, DemoError> {
    let up = uploads(ctl, nodes)?;
    let mut out = Vec::new();
    for (n, (_, bytes, answers)) in nodes.list.iter().zip(up) {
        let state = match n.role {
            Role::Device => ctl.device(&n.store),
            Role::Seeder => None,
        };
        let current = |k: &str| {
            state
                .as_ref()
                .and_then(|s| s["current"][k].as_str().map(str::to_owned))
        };
        out.push(NodeView {
            name: n.name.clone(),
            role: n.role.name().to_owned(),
            peer_id: n.peer_id.clone(),
            pid: n.pid(),
            listen: n.p2p_addrs.clone(),
            store: n.store.display().to_string(),
            log: n.log.display().to_string(),
            url: n.url(),
            device_id: (n.role == Role::Device).then(|| n.name.clone()),
            uploaded_bytes: bytes,
            uploaded_answers: answers,
            final_bundle_id: current("bundle_id"),
            final_version: current("version"),
            final_status: current("status"),
        });
    }
    Ok(out)
}

/// Peers a node's status shows connected.
fn connected_peers(status: &serde_json::Value) -> usize {
    status["peers"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count())
}

/// Whether a device's state (`lanseed device list`) shows it done with
/// release `bundle`: running it confirmed when it is `healthy`; else back
/// on `good`, confirmed, with `bundle` failed.
fn settled(state: &serde_json::Value, bundle: &str, healthy: bool, good: &str) -> bool {
    let current = &state["current"];
    if healthy {
        return current["bundle_id"] == bundle && current["status"] == "success";
    }
    failed(state, bundle) && current["bundle_id"] == good && current["status"] == "success"
}

/// Whether a device's state shows `bundle` failed (rolled back).
fn failed(state: &serde_json::Value, bundle: &str) -> bool {
    state["bundles"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|b| b["bundle_id"] == bundle && b["status"] == "error")
        || state["recent_events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["event"] == "updateFailed" && e["bundle"] == bundle)
}

/// Whether a node's devices table shows `device_id` confirmed on `bundle`.
fn table_shows(status: &serde_json::Value, device_id: &str, bundle: &str) -> bool {
    status["devices"].as_array().into_iter().flatten().any(|d| {
        d["device_id"] == device_id && d["bundle_id"] == bundle && d["status"] == "success"
    })
}

/// A line of progress on stderr.
fn say(line: String) {
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_healthy_release_is_settled_once_confirmed() {
        let trial = json!({"current": {"bundle_id": "b", "status": "trial"}});
        let ok = json!({"current": {"bundle_id": "b", "status": "success"}});
        assert!(!settled(&trial, "b", true, "a"));
        assert!(settled(&ok, "b", true, "a"));
        assert!(!settled(&ok, "c", true, "b"));
    }

    #[test]
    fn a_broken_release_is_settled_once_rolled_back() {
        // Before it arrives the device already runs the good bundle.
        let before = json!({"current": {"bundle_id": "a", "status": "success"}, "bundles": [], "recent_events": []});
        assert!(!settled(&before, "b", false, "a"));
        let on_trial = json!({"current": {"bundle_id": "b", "status": "trial"},
            "bundles": [{"bundle_id": "b", "status": "trial"}], "recent_events": []});
        assert!(!settled(&on_trial, "b", false, "a"));
        let back = json!({"current": {"bundle_id": "a", "status": "success"},
            "bundles": [{"bundle_id": "b", "status": "error"}], "recent_events": []});
        assert!(settled(&back, "b", false, "a"));
        let deleted = json!({"current": {"bundle_id": "a", "status": "success"},
            "bundles": [], "recent_events": [{"event": "updateFailed", "bundle": "b"}]});
        assert!(settled(&deleted, "b", false, "a"));
        assert!(failed(&deleted, "b") && failed(&back, "b") && !failed(&on_trial, "b"));
    }

    #[test]
    fn the_devices_table_must_show_the_device_confirmed() {
        let s = json!({"devices": [
            {"device_id": "kiosk-1", "bundle_id": "b", "status": "success"},
            {"device_id": "kiosk-2", "bundle_id": "b", "status": "trial"},
        ]});
        assert!(table_shows(&s, "kiosk-1", "b"));
        assert!(!table_shows(&s, "kiosk-2", "b"));
        assert!(!table_shows(&s, "kiosk-3", "b"));
        assert_eq!(
            connected_peers(&json!({"peers": [{"connected": true}, {"connected": false}]})),
            1
        );
    }
}
