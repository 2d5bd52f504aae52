//! The demo's report: per published release, how long it took to reach
//! every device and to be confirmed (or rolled back) there, the bytes
//! moved, and who served whom; per node, what it uploaded and where each
//! device ended. Plain data with serde (`--json`), built from what the
//! nodes logged and said by pure functions, and printed for people by
//! [`render`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::confirm::Confirmer;
use super::discovery::Discovery;
use super::logs::{Line, secs_since};
use crate::output::bytes;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The folder the demo ran in.
    pub dir: String,
    /// Whether that folder is kept (`--dir`).
    pub dir_kept: bool,
    /// The app id.
    pub app: String,
    /// How the nodes found each other.
    pub discovery: Discovery,
    /// The same, in words.
    pub discovery_note: String,
    /// Who loaded each device's page and confirmed it.
    pub confirmer: Confirmer,
    /// The browser used, with Chromium.
    pub browser: Option<String>,
    /// The devices' `--app-ready-timeout`.
    pub app_ready_timeout_secs: f64,
    /// The seeder and the devices.
    pub nodes: Vec<NodeView>,
    /// One per published release, in order.
    pub steps: Vec<Step>,
}

/// One node of the demo.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    /// Its name in the report.
    pub name: String,
    /// `seeder` or `device`.
    pub role: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Its process id.
    pub pid: u32,
    /// Its libp2p addresses (all on 127.0.0.1).
    pub listen: Vec<String>,
    /// Its store.
    pub store: String,
    /// Its log.
    pub log: String,
    /// Where a device serves its page.
    pub url: Option<String>,
    /// A device's `--device-id`.
    pub device_id: Option<String>,
    /// Bytes it uploaded to peers in all (`status`: `uploads.bytes`).
    pub uploaded_bytes: u64,
    /// Answers with data it sent (`uploads.answers`).
    pub uploaded_answers: u64,
    /// A device's bundle at the end.
    pub final_bundle_id: Option<String>,
    /// Its version.
    pub final_version: Option<String>,
    /// Its status (`success`, …).
    pub final_status: Option<String>,
}

/// What a release did.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Its version.
    pub version: String,
    /// Its bundle id.
    pub bundle_id: String,
    /// Its sequence number.
    pub seq: u64,
    /// Files in the bundle.
    pub files: usize,
    /// Bytes of the bundle.
    pub bundle_bytes: u64,
    /// `installed` (a healthy release, confirmed everywhere) or
    /// `rolled_back` (a broken one, rolled back everywhere).
    pub outcome: Outcome,
    /// Seconds from publishing until the last device ran it (on trial).
    pub reached_all_secs: f64,
    /// Seconds from publishing until the last device confirmed it or
    /// rolled it back.
    pub settled_all_secs: f64,
    /// Bytes the devices fetched, verified (files they already held are
    /// not fetched again).
    pub bytes: u64,
    /// The same as sent on the wire (compressed).
    pub wire_bytes: u64,
    /// Each device.
    pub devices: Vec<StepDevice>,
    /// Who served whom, in wire bytes.
    pub served: Vec<Served>,
    /// What each node uploaded during the step (`status` before and after).
    pub uploads: Vec<Upload>,
}

/// What a device did with a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Confirmed healthy (`appReady`).
    Confirmed,
    /// Rolled back (`updateFailed`).
    RolledBack,
    /// Neither was logged.
    Unknown,
}

/// One device in one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepDevice {
    /// The device's name.
    pub name: String,
    /// Seconds from publishing until its fetch was done.
    pub fetched_secs: Option<f64>,
    /// … until the bundle was current, on trial.
    pub set_secs: Option<f64>,
    /// … until it confirmed or rolled back.
    pub settled_secs: Option<f64>,
    /// Which.
    pub outcome: Outcome,
    /// Bytes it fetched, verified.
    pub bytes: u64,
    /// As sent.
    pub wire_bytes: u64,
}

/// Bytes one node sent another for one release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Served {
    /// The sender.
    pub from: String,
    /// The receiver.
    pub to: String,
    /// Wire bytes.
    pub wire_bytes: u64,
}

/// What a node uploaded during a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upload {
    /// The node.
    pub node: String,
    /// Bytes.
    pub bytes: u64,
    /// Answers with data.
    pub answers: u64,
}

/// The release a step published.
#[derive(Clone, Debug)]
pub struct Published {
    /// Version.
    pub version: String,
    /// Bundle id.
    pub bundle_id: String,
    /// Sequence number.
    pub seq: u64,
    /// Files.
    pub files: usize,
    /// Bytes.
    pub bundle_bytes: u64,
    /// Whether it should be kept.
    pub healthy: bool,
    /// When it was published.
    pub at: SystemTime,
}

/// A device's log lines written during a step.
#[derive(Clone, Debug)]
pub struct DeviceLines {
    /// The device's name.
    pub name: String,
    /// Its lines.
    pub lines: Vec<Line>,
}

/// Builds a step from the devices' log lines, `names` (peer id → node
/// name) and each node's upload counters before and after
/// (`(name, bytes, answers)`).
pub fn build_step(
    published: &Published,
    devices: &[DeviceLines],
    names: &BTreeMap<String, String>,
    before: &[(String, u64, u64)],
    after: &[(String, u64, u64)],
) -> Step {
    let start = published.at;
    let bundle = published.bundle_id.as_str();
    let mut served = Vec::new();
    let mut out = Vec::new();
    for d in devices {
        let transfer = d.lines.iter().find_map(|l| match l {
            Line::Transfer(t) if t.bundle == bundle => Some(t),
            _ => None,
        });
        let event = |name: &str| {
            d.lines.iter().find_map(|l| match l {
                Line::Event(e) if e.bundle == bundle && e.name == name => Some(e.at),
                _ => None,
            })
        };
        let (outcome, settled) = match (event("appReady"), event("updateFailed")) {
            (_, Some(at)) => (Outcome::RolledBack, Some(at)),
            (Some(at), None) => (Outcome::Confirmed, Some(at)),
            (None, None) => (Outcome::Unknown, None),
        };
        if let Some(t) = transfer {
            for (peer, wire) in &t.from {
                served.push(Served {
                    from: names.get(peer).cloned().unwrap_or_else(|| peer.clone()),
                    to: d.name.clone(),
                    wire_bytes: *wire,
                });
            }
        }
        out.push(StepDevice {
            name: d.name.clone(),
            fetched_secs: transfer.map(|t| secs_since(start, t.at)),
            set_secs: event("set").map(|at| secs_since(start, at)),
            settled_secs: settled.map(|at| secs_since(start, at)),
            outcome,
            bytes: transfer.map_or(0, |t| t.bytes),
            wire_bytes: transfer.map_or(0, |t| t.wire_bytes),
        });
    }
    let all = |f: fn(&StepDevice) -> Option<f64>| {
        out.iter()
            .map(f)
            .try_fold(0.0_f64, |max, s| s.map(|s| max.max(s)))
            .unwrap_or(f64::NAN)
    };
    let uploads = after
        .iter()
        .map(|(node, bytes, answers)| {
            let (b0, a0) = before
                .iter()
                .find(|(n, _, _)| n == node)
                .map_or((0, 0), |(_, b, a)| (*b, *a));
            Upload {
                node: node.clone(),
                bytes: bytes.saturating_sub(b0),
                answers: answers.saturating_sub(a0),
            }
        })
        .collect();
    let expected = if published.healthy {
        Outcome::Confirmed
    } else {
        Outcome::RolledBack
    };
    let everywhere = !out.is_empty() && out.iter().all(|d| d.outcome == expected);
    Step {
        version: published.version.clone(),
        bundle_id: published.bundle_id.clone(),
        seq: published.seq,
        files: published.files,
        bundle_bytes: published.bundle_bytes,
        outcome: match (everywhere, published.healthy) {
            (false, _) => Outcome::Unknown,
            (true, true) => Outcome::Confirmed,
            (true, false) => Outcome::RolledBack,
        },
        reached_all_secs: all(|d| d.set_secs),
        settled_all_secs: all(|d| d.settled_secs),
        bytes: out.iter().map(|d| d.bytes).sum(),
        wire_bytes: out.iter().map(|d| d.wire_bytes).sum(),
        devices: out,
        served,
        uploads,
    }
}

/// The report for people.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let devices = r.nodes.iter().filter(|n| n.role == "device").count();
    let who = match (&r.confirmer, &r.browser) {
        (Confirmer::Chromium, Some(b)) => format!("headless Chromium ({b})"),
        (Confirmer::Chromium, None) => "headless Chromium".to_owned(),
        (Confirmer::PageDriver, _) => {
            "the built-in page driver: it loads each page and every script it references, and confirms only if they all load".to_owned()
        }
    };
    let _ = writeln!(
        s,
        "lanseed demo: 1 seeder and {devices} devices on loopback. {}",
        r.discovery_note
    );
    let _ = writeln!(
        s,
        "The seeder serves one peer at a time (--max-uploads 1): the devices pass each release on to each other."
    );
    let _ = writeln!(s, "Pages loaded and confirmed by {who}.");
    for (i, step) in r.steps.iter().enumerate() {
        let _ = writeln!(s);
        let what = match step.outcome {
            Outcome::Confirmed => format!(
                "every device ran it within {:.2} s and confirmed it within {:.2} s",
                step.reached_all_secs, step.settled_all_secs
            ),
            Outcome::RolledBack => format!(
                "every device ran it within {:.2} s, none confirmed it (app-ready timeout {:.0} s), all rolled back within {:.2} s",
                step.reached_all_secs, r.app_ready_timeout_secs, step.settled_all_secs
            ),
            Outcome::Unknown => "not every device settled as expected".to_owned(),
        };
        let broken = if step.outcome == Outcome::RolledBack {
            format!(
                " (broken: its page loads {}, which the bundle lacks)",
                super::app::READY_SCRIPT
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "{}. {} {}{broken}: bundle {}…, {} files, {}",
            i + 1,
            r.app,
            step.version,
            &step.bundle_id[..step.bundle_id.len().min(12)],
            step.files,
            bytes(step.bundle_bytes)
        );
        let _ = writeln!(s, "   {what}");
        let _ = writeln!(
            s,
            "   moved {} ({} on the wire); files a device already held were not sent again",
            bytes(step.bytes),
            bytes(step.wire_bytes)
        );
        for d in &step.devices {
            let t = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
            let from: Vec<String> = step
                .served
                .iter()
                .filter(|e| e.to == d.name)
                .map(|e| format!("{} {}", e.from, bytes(e.wire_bytes)))
                .collect();
            let from = if from.is_empty() {
                "nothing fetched".to_owned()
            } else {
                format!("from {}", from.join(" + "))
            };
            let _ = writeln!(
                s,
                "   {:<9} fetched {} ({from}), running {}, {} {}",
                d.name,
                t(d.fetched_secs),
                t(d.set_secs),
                match d.outcome {
                    Outcome::Confirmed => "confirmed",
                    Outcome::RolledBack => "rolled back",
                    Outcome::Unknown => "unsettled",
                },
                t(d.settled_secs)
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "uploaded in all:");
    for n in &r.nodes {
        let _ = writeln!(
            s,
            "   {:<9} {} in {} answer{}",
            n.name,
            bytes(n.uploaded_bytes),
            n.uploaded_answers,
            if n.uploaded_answers == 1 { "" } else { "s" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::demo::logs::{Event, TransferDone};

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn published(healthy: bool) -> Published {
        Published {
            version: "1.0.0".into(),
            bundle_id: "b1".repeat(32),
            seq: 7,
            files: 3,
            bundle_bytes: 1000,
            healthy,
            at: t0(),
        }
    }

    fn ev(ms: u64, name: &str, bundle: &str) -> Line {
        Line::Event(Event {
            at: t0() + Duration::from_millis(ms),
            name: name.into(),
            bundle: bundle.into(),
        })
    }

    fn done(ms: u64, bundle: &str, from: &[(&str, u64)]) -> Line {
        Line::Transfer(TransferDone {
            at: t0() + Duration::from_millis(ms),
            bundle: bundle.into(),
            bytes: 1000,
            wire_bytes: from.iter().map(|(_, b)| b).sum(),
            from: from.iter().map(|(p, b)| (p.to_string(), *b)).collect(),
        })
    }

    fn names() -> BTreeMap<String, String> {
        [("P0", "seeder"), ("P1", "kiosk-1")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    #[test]
    fn a_healthy_release_reaches_and_is_confirmed_by_all() {
        let p = published(true);
        let b = p.bundle_id.clone();
        let devices = vec![
            DeviceLines {
                name: "kiosk-1".into(),
                lines: vec![
                    done(100, &b, &[("P0", 600)]),
                    ev(110, "set", &b),
                    ev(300, "appReady", &b),
                ],
            },
            DeviceLines {
                name: "kiosk-2".into(),
                lines: vec![
                    // Another bundle's lines are not this step's.
                    done(50, "other", &[("P0", 5)]),
                    done(200, &b, &[("P0", 100), ("P1", 500)]),
                    ev(210, "set", &b),
                    ev(500, "appReady", &b),
                ],
            },
        ];
        let before = vec![("seeder".to_owned(), 10, 1)];
        let after = vec![
            ("seeder".to_owned(), 710, 3),
            ("kiosk-1".to_owned(), 500, 1),
        ];
        let s = build_step(&p, &devices, &names(), &before, &after);
        assert_eq!(s.outcome, Outcome::Confirmed);
        assert!((s.reached_all_secs - 0.21).abs() < 1e-9);
        assert!((s.settled_all_secs - 0.5).abs() < 1e-9);
        assert_eq!((s.bytes, s.wire_bytes), (2000, 1200));
        assert_eq!(
            s.served,
            vec![
                Served {
                    from: "seeder".into(),
                    to: "kiosk-1".into(),
                    wire_bytes: 600
                },
                Served {
                    from: "seeder".into(),
                    to: "kiosk-2".into(),
                    wire_bytes: 100
                },
                Served {
                    from: "kiosk-1".into(),
                    to: "kiosk-2".into(),
                    wire_bytes: 500
                },
            ]
        );
        assert_eq!(
            s.uploads,
            vec![
                Upload {
                    node: "seeder".into(),
                    bytes: 700,
                    answers: 2
                },
                Upload {
                    node: "kiosk-1".into(),
                    bytes: 500,
                    answers: 1
                },
            ]
        );
        let text = render(&report(vec![s]));
        assert!(text.contains("confirmed it within 0.50 s"), "{text}");
        assert!(text.contains("from seeder 100 B + kiosk-1 500 B"), "{text}");
    }

    #[test]
    fn a_broken_release_rolls_back_everywhere() {
        let p = published(false);
        let b = p.bundle_id.clone();
        let devices = vec![DeviceLines {
            name: "kiosk-1".into(),
            lines: vec![
                done(100, &b, &[("P0", 600)]),
                ev(110, "set", &b),
                ev(3200, "updateFailed", &b),
            ],
        }];
        let s = build_step(&p, &devices, &names(), &[], &[]);
        assert_eq!(s.outcome, Outcome::RolledBack);
        assert_eq!(s.devices[0].outcome, Outcome::RolledBack);
        assert!((s.settled_all_secs - 3.2).abs() < 1e-9);
        assert!(render(&report(vec![s])).contains("all rolled back within 3.20 s"));
    }

    #[test]
    fn a_device_that_did_not_settle_spoils_the_step() {
        let p = published(true);
        let b = p.bundle_id.clone();
        let devices = vec![
            DeviceLines {
                name: "kiosk-1".into(),
                lines: vec![ev(110, "set", &b), ev(300, "appReady", &b)],
            },
            DeviceLines {
                name: "kiosk-2".into(),
                lines: vec![ev(110, "set", &b)],
            },
        ];
        let s = build_step(&p, &devices, &names(), &[], &[]);
        assert_eq!(s.outcome, Outcome::Unknown);
        assert!(s.settled_all_secs.is_nan());
        assert_eq!(s.devices[1].fetched_secs, None);
    }

    fn report(steps: Vec<Step>) -> Report {
        Report {
            dir: "/tmp/x".into(),
            dir_kept: false,
            app: "com.example.hello".into(),
            discovery: Discovery::Peer,
            discovery_note: Discovery::Peer.describe(),
            confirmer: Confirmer::PageDriver,
            browser: None,
            app_ready_timeout_secs: 3.0,
            nodes: Vec::new(),
            steps,
        }
    }
}
