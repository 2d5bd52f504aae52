//! SIGKILL `lanseed device` at every phase of its work — download,
//! materialise, switch, trial, rollback, the collection of its store and
//! the first write of its node key — restart it each time, and check
//! that the bundle it serves is always whole (every file matches the
//! manifest of the bundle the page came from, or the builtin one) and that
//! the rules still hold afterwards: a trial cut short counts as failed,
//! broken bundles end in `error` and never come back, healthy ones end in
//! `success` unless their trial was cut.
//!
//! The scenario of one run: releases 1.0.0 (healthy), 2.0.0 and 3.0.0
//! (broken: nobody confirms them) and 4.0.0 (healthy) reach the device one
//! after the other through a seeder; the test confirms healthy bundles as
//! their page would. Kills come from the crash points of
//! `lanseed_protocol::crashpoint` (the device kills itself at the N-th
//! durable step, named by phase) and, for the trial, from the test while a
//! bundle is on trial.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lanseed_protocol::{Hash, Manifest, Store};
use lanseed_tests::net::{Netns, NodeProc, strip_ansi};
use lanseed_tests::{json, keygen, lanseed_bin, run_ok};

const APP: &str = "com.example.kiosk";
const URL: &str = "http://127.0.0.1:8787";
const HEALTHY: [bool; 4] = [true, false, false, true];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    trust: String,
    builtin: PathBuf,
    files: Vec<PathBuf>,
    ids: Vec<String>,
    manifests: BTreeMap<String, Manifest>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let builtin = dir.path().join("builtin");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("index.html"), "<h1>builtin</h1>").unwrap();
    let source = dir.path().join("source");
    let (mut files, mut ids, mut manifests) = (vec![], vec![], BTreeMap::new());
    for (i, healthy) in HEALTHY.iter().enumerate() {
        let v = format!("{}.0.0", i + 1);
        let build = dir.path().join(format!("build-{v}"));
        std::fs::create_dir_all(build.join("assets")).unwrap();
        std::fs::write(
            build.join("index.html"),
            format!("<h1>version {v}</h1><script src=/__lanseed/client.js></script>"),
        )
        .unwrap();
        for f in 0..5 {
            let body = format!(
                "/* {v} {healthy} file {f} */ {}",
                "x".repeat(2000 * (f + 1))
            );
            std::fs::write(build.join(format!("assets/f{f}.js")), body).unwrap();
        }
        let out = run_ok(&[
            "pack",
            s(&build),
            "--app",
            APP,
            "--version",
            &v,
            "--key",
            s(&key),
            "--store",
            s(&source),
            "--seq",
            &(i + 1).to_string(),
            "--json",
        ]);
        let id = json(&out)["bundle_id"].as_str().unwrap().to_owned();
        let file = dir.path().join(format!("{v}.lanseed"));
        run_ok(&["export", APP, &v, "--out", s(&file), "--store", s(&source)]);
        let m = Store::open(&source)
            .unwrap()
            .read_manifest(&id.parse().unwrap())
            .unwrap();
        manifests.insert(id.clone(), m);
        files.push(file);
        ids.push(id);
    }
    Fixture {
        dir,
        trust,
        builtin,
        files,
        ids,
        manifests,
    }
}

/// How a run is cut.
#[derive(Clone, Copy, Debug)]
enum Kill {
    None,
    /// No kill: every crash point is only logged, to count them.
    Count,
    /// The device kills itself at crash point N.
    At(usize),
    /// The test kills it while release K (0-based) is on trial.
    Trial(usize),
}

struct Device {
    child: Child,
    log: PathBuf,
}

impl Device {
    fn start(ns: &Netns, f: &Fixture, store: &Path, kill_at: Option<usize>, n: usize) -> Device {
        let log = store.with_extension(format!("log{n}"));
        let mut cmd = ns.command(&lanseed_bin());
        cmd.args([
            "device",
            "--store",
            s(store),
            "--app",
            APP,
            "--trust",
            &f.trust,
            "--builtin",
            s(&f.builtin),
        ])
        .args([
            "--serve",
            "127.0.0.1:8787",
            "--app-ready-timeout",
            "1s",
            "--apply",
            "immediate",
        ])
        .env("RUST_LOG", "lanseed=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        if let Some(k) = kill_at {
            cmd.env(lanseed_protocol::crashpoint::ENV, k.to_string());
        }
        Device {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The phase of the crash point that killed it, if one did.
    fn killed_at(&mut self) -> Option<String> {
        let status = self.child.try_wait().unwrap()?;
        assert_eq!(
            status.signal(),
            Some(9),
            "device exited otherwise: {status:?}\n{}",
            self.log()
        );
        self.log()
            .lines()
            .find_map(|l| l.strip_suffix(": SIGKILL"))
            .map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_owned())
            .or(Some("trial: killed by the test".into()))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body curl got for `args`; a request that failed (curl's exit
/// status: refused, reset, timed out) is made again, a few times, so that
/// an empty body from a failed transfer is never taken for a file's bytes.
fn curl(ns: &Netns, args: &[&str]) -> Vec<u8> {
    let mut last = String::new();
    for _ in 0..5 {
        let out = ns
            .command(Path::new("curl"))
            .args(["-sS", "--max-time", "10"])
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            return out.stdout;
        }
        last = format!("{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        eprintln!("curl {args:?} failed ({last}); again");
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("curl {args:?} kept failing: {last}");
}

/// Checks that the page served now and every file of its bundle match
/// one manifest (or the builtin bundle). Returns the bundle id served.
fn check_whole(ns: &Netns, f: &Fixture, work: &Path) -> String {
    let jar = work.join("cookies");
    let headers = work.join("headers");
    let index = curl(ns, &["-c", s(&jar), "-D", s(&headers), &format!("{URL}/")]);
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let Some(id) = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("server-timing")
                .then(|| {
                    l.split("desc=\"")
                        .nth(1)
                        .map(|r| r.trim_end().trim_end_matches('"').to_owned())
                })
        })
        .flatten()
    else {
        panic!("no page served: {head}");
    };
    if id == "builtin" {
        assert_eq!(index, std::fs::read(f.builtin.join("index.html")).unwrap());
        return id;
    }
    let m = &f.manifests[&id];
    assert_eq!(
        Hash::of(&index),
        m.get("index.html").unwrap().blake3,
        "index.html of {id}"
    );
    // The page's other files come from the page's bundle (its cookie),
    // even if the device switches meanwhile; a page request would not.
    for file in m.files().iter().filter(|f| f.path.as_str() != "index.html") {
        let body = curl(ns, &["-b", s(&jar), &format!("{URL}/{}", file.path)]);
        assert_eq!(
            Hash::of(&body),
            file.blake3,
            "{} of {id} is not whole",
            file.path
        );
    }
    id
}

fn device_state(store: &Path) -> Option<serde_json::Value> {
    let out = lanseed_tests::lanseed()
        .args(["device", "list", "--store", s(store)])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

enum Outcome {
    Done,
    Died(String),
}

/// Drives the scenario from wherever the device and seeder are, until the
/// last release settles or the device dies.
fn drive(
    ns: &Netns,
    f: &Fixture,
    seeder: &Path,
    device_store: &Path,
    dev: &mut Device,
    kill: Kill,
) -> Outcome {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "scenario stuck:\n{}",
            dev.log()
        );
        if let Some(phase) = dev.killed_at() {
            return Outcome::Died(phase);
        }
        let published = Store::open(seeder).unwrap().releases().unwrap().len();
        let k = published - 1;
        let Some(st) = device_state(device_store) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let status = st["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["bundle_id"] == f.ids[k].as_str())
            .map(|b| b["status"].as_str().unwrap().to_owned());
        match status.as_deref() {
            Some("trial") => {
                if let Kill::Trial(t) = kill
                    && t == k
                {
                    let _ = dev.child.kill();
                    let _ = dev.child.wait();
                    return Outcome::Died("trial: killed by the test".into());
                }
                if HEALTHY[k] {
                    let body = format!("{{\"bundle\":\"{}\"}}", f.ids[k]);
                    // Once: the device may be dying at a crash point.
                    let _ = ns
                        .command(Path::new("curl"))
                        .args(["-s", "--max-time", "5"])
                        .args([
                            "-X",
                            "POST",
                            "-H",
                            "content-type: application/json",
                            "-d",
                            &body,
                            &format!("{URL}/__lanseed/ready"),
                        ])
                        .output();
                }
            }
            Some("success") | Some("error") => {
                if k == 3 {
                    return Outcome::Done;
                }
                run_ok(&[
                    "import",
                    s(&f.files[k + 1]),
                    "--trust",
                    &f.trust,
                    "--store",
                    s(seeder),
                ]);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The rules after a run: broken bundles ended in error; a healthy one in
/// success unless its trial was cut; the current bundle is the last good one.
fn check_rules(f: &Fixture, device_store: &Path, cut_trial: Option<usize>) {
    let st = device_state(device_store).expect("device answers");
    let status = |k: usize| {
        st["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["bundle_id"] == f.ids[k].as_str())
            .map(|b| b["status"].as_str().unwrap().to_owned())
    };
    for k in [1, 2] {
        assert_eq!(status(k).as_deref(), Some("error"), "broken {k}: {st}");
    }
    let v4_ok = cut_trial != Some(3);
    if v4_ok {
        assert_eq!(status(3).as_deref(), Some("success"), "{st}");
        assert_eq!(st["current"]["bundle_id"], f.ids[3].as_str(), "{st}");
    } else {
        assert_eq!(status(3).as_deref(), Some("error"), "{st}");
    }
    assert_ne!(st["current"]["status"], "error", "{st}");
}

#[test]
fn sigkill_at_every_phase_leaves_a_whole_bundle_and_the_rules_hold() {
    let f = fixture();
    let ns = Netns::new();
    let run = |n: usize, kill: Kill| -> (Option<String>, String) {
        let work = f.dir.path().join(format!("run-{n}"));
        std::fs::create_dir_all(&work).unwrap();
        let seeder_store = work.join("seeder");
        run_ok(&[
            "import",
            s(&f.files[0]),
            "--trust",
            &f.trust,
            "--store",
            s(&seeder_store),
        ]);
        let _seeder = NodeProc::start(&ns, &seeder_store, &[]);
        let device_store = work.join("device");
        let kill_at = match kill {
            Kill::At(k) => Some(k),
            Kill::Count => Some(0),
            _ => None,
        };
        let mut dev = Device::start(&ns, &f, &device_store, kill_at, 0);
        let mut restarted = None;
        let (died, cut_trial, count_log) =
            match drive(&ns, &f, &seeder_store, &device_store, &mut dev, kill) {
                Outcome::Done if matches!(kill, Kill::At(_)) => {
                    // The crash point was not reached by the end of the
                    // scenario; a later step (a collection) may still reach
                    // it while the checks below run. Check an unarmed
                    // restart of the same store instead.
                    let log = dev.log();
                    drop(dev);
                    let again = Device::start(&ns, &f, &device_store, None, 1);
                    let t0 = Instant::now();
                    while device_state(&device_store).is_none() {
                        assert!(t0.elapsed() < Duration::from_secs(20), "{}", again.log());
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    restarted = Some(again);
                    (None, None, log)
                }
                Outcome::Done => (None, None, dev.log()),
                Outcome::Died(phase) => {
                    let log = dev.log();
                    drop(dev);
                    // The trial that was running when it died, if any.
                    let cut = f.ids.iter().position(|id| {
                        let st: Option<serde_json::Value> =
                            lanseed_client::DeviceState::load(&device_store)
                                .ok()
                                .flatten()
                                .map(|s| serde_json::to_value(s).unwrap());
                        st.is_some_and(|s| {
                            s["current"] == id.as_str() && s["bundles"][id]["status"] == "trial"
                        })
                    });
                    let mut again = Device::start(&ns, &f, &device_store, None, 1);
                    // Restarted: wait until it serves, then the bundle must be whole.
                    let t0 = Instant::now();
                    while device_state(&device_store).is_none() {
                        assert!(t0.elapsed() < Duration::from_secs(20), "{}", again.log());
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    check_whole(&ns, &f, &work);
                    match drive(
                        &ns,
                        &f,
                        &seeder_store,
                        &device_store,
                        &mut again,
                        Kill::None,
                    ) {
                        Outcome::Done => {}
                        Outcome::Died(p) => {
                            panic!("died again without a kill: {p}\n{}", again.log())
                        }
                    }
                    restarted = Some(again);
                    (Some(phase), cut, log)
                }
            };
        check_whole(&ns, &f, &work);
        check_rules(&f, &device_store, cut_trial);
        drop(restarted);
        (died, count_log)
    };

    // Count the crash points of a whole run (which must end well), and
    // learn their phases.
    let (died, log) = run(0, Kill::Count);
    assert!(died.is_none());
    let points: Vec<(usize, String)> = log
        .lines()
        .filter_map(|l| l.strip_prefix("crashpoint "))
        .map(|l| {
            let (n, phase) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), bucket(phase))
        })
        .collect();
    let mut by_phase: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (n, p) in &points {
        by_phase.entry(p.clone()).or_default().push(*n);
    }
    eprintln!(
        "crash points per phase: {:?}",
        by_phase
            .iter()
            .map(|(k, v)| (k, v.len()))
            .collect::<Vec<_>>()
    );

    let mut plan: Vec<Kill> = Vec::new();
    // Which phase a numbered point falls in can move between runs (the
    // device's collection and its next install take turns by timing), so
    // the phases whose points interleave get a few kills more than the
    // least the checks below ask for.
    for (phase, most) in [
        ("download", 12),
        ("materialise", 16),
        ("switch", 16),
        ("trial", 12),
        ("rollback", 12),
        ("collect", 14),
        ("node key", 4),
    ] {
        let list = by_phase.get(phase).cloned().unwrap_or_default();
        let take = most.min(list.len());
        for i in 0..take {
            plan.push(Kill::At(list[i * list.len() / take]));
        }
    }
    for k in 0..4 {
        for _ in 0..3 {
            plan.push(Kill::Trial(k));
        }
    }
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for (n, kill) in plan.iter().enumerate() {
        let (died, _) = run(n + 1, *kill);
        let phase = died
            .map(|p| bucket(&p))
            .unwrap_or_else(|| "not reached".into());
        eprintln!("kill {:>3} {:?}: {phase}", n + 1, kill);
        *hits.entry(phase).or_default() += 1;
    }
    eprintln!("kills per phase: {hits:?}");
    let total: usize = hits
        .iter()
        .filter(|(p, _)| p.as_str() != "not reached")
        .map(|(_, n)| n)
        .sum();
    assert!(total >= 70, "{total} kills");
    for (phase, least) in [
        ("download", 10),
        ("materialise", 10),
        ("switch", 10),
        ("trial", 10),
        ("rollback", 10),
        ("collect", 6),
        ("node key", 3),
    ] {
        assert!(
            hits.get(phase).copied().unwrap_or(0) >= least,
            "{phase}: {hits:?}"
        );
    }
}

/// The phase of a crash point's label.
fn bucket(label: &str) -> String {
    let head = label.split(':').next().unwrap_or("");
    match head {
        "stage" | "sync" | "publish" | "commit" | "download" => "download",
        "materialise" => "materialise",
        "switch" => "switch",
        "trial" => "trial",
        "rollback" => "rollback",
        "collect" => "collect",
        "node key" => "node key",
        other => other,
    }
    .to_owned()
}
