//! What a benchmark on the namespace LAN needs around its processes: a
//! per-run name prefix for its namespaces, teardown on exit, panic or a
//! signal (not only `Drop`, which neither a signal nor `exit` runs), and
//! the CPU seconds of a process and its descendants.
//!
//! Teardown finds its namespaces by the prefix alone, so it needs no list
//! kept in step with the code that made them: every process inside one
//! (`ip netns pids`) is killed, then the namespace is deleted, then the
//! folders registered with [`remove_on_teardown`] are removed.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The prefix of every namespace this process makes: `lsd-PID-TOKEN-`,
/// where the token (from the clock at first use) tells this run from an
/// earlier one that had the same process id and died before its cleanup.
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        prefix_for(std::process::id(), nanos)
    })
}

/// [`run_prefix`] for process `pid` started at `nanos` past the epoch:
/// six base-36 digits of the microseconds.
fn prefix_for(pid: u32, nanos: u128) -> String {
    let mut t = (nanos / 1_000) % 36u128.pow(6);
    let mut token = [b'0'; 6];
    for d in token.iter_mut().rev() {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[(t % 36) as usize];
        t /= 36;
    }
    format!("lsd-{pid}-{}-", String::from_utf8_lossy(&token))
}

static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes `dir` (recursively) at teardown.
pub fn remove_on_teardown(dir: &Path) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_owned());
}

/// The namespaces of this run that exist now.
pub fn own_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    namespaces_with_prefix(&text, run_prefix())
}

/// The names in `ip netns list`'s output (`NAME` or `NAME (id: N)` a line)
/// that start with `prefix`.
fn namespaces_with_prefix(list: &str, prefix: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Kills (SIGKILL) every process inside this run's namespaces: what a
/// server that forks (nginx's workers) leaves behind when only the
/// process that was started is killed.
pub fn kill_own_processes() {
    for ns in own_namespaces() {
        let pids = Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).output();
        }
    }
}

/// Kills (SIGKILL) `root` and its descendants, all found before any is
/// killed (a child whose parent died first would be out of reach).
pub fn kill_tree(root: u32) {
    let mut pids = descendants(root, &process_parents());
    pids.push(root);
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = Command::new("kill").arg("-KILL").args(&pids).output();
}

/// Kills every process in this run's namespaces, deletes them, and
/// removes the folders registered for it. Safe to call more than once.
pub fn teardown() {
    kill_own_processes();
    for ns in own_namespaces() {
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    }
    let dirs = std::mem::take(&mut *DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Runs [`teardown`] on SIGINT, SIGTERM, SIGHUP and SIGQUIT (then exits
/// with 128 + the signal) and on a panic (before the panic goes on).
/// For binaries: call once, first thing in `main`.
pub fn install_teardown() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])?;
    std::thread::Builder::new()
        .name("teardown".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                eprintln!("signal {sig}: tearing down {}*", run_prefix());
                teardown();
                std::process::exit(128 + sig);
            }
        })?;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        eprintln!("panic: tearing down {}*", run_prefix());
        teardown();
    }));
    Ok(())
}

/// One process's line of `/proc/PID/stat`, the fields used here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// Its state: `R`, `S`, `Z` (exited, not yet reaped), …
    pub state: char,
    /// Its parent.
    pub ppid: u32,
    /// CPU ticks of its own (user and system, all threads).
    pub ticks: u64,
    /// CPU ticks of its children that ended and that it reaped.
    pub child_ticks: u64,
}

/// Parses a `/proc/PID/stat` line (the command name, in parentheses, may
/// hold spaces and parentheses: the fields start after the last `)`).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field k is f[k - 3].
    let num = |k: usize| f.get(k - 3)?.parse::<u64>().ok();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: u32::try_from(num(4)?).ok()?,
        ticks: num(14)? + num(15)?,
        child_ticks: num(16)? + num(17)?,
    })
}

/// `/proc/PID/stat` of `pid`, or `None` when it is gone.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when unknown).
fn ticks_per_sec() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Every live descendant of `root` in `(pid, ppid)` pairs.
fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in parents {
            if ppid == p && pid != root && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// Every process now, with its parent.
fn process_parents() -> Vec<(u32, u32)> {
    let mut parents = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(s) = stat(pid) {
            parents.push((pid, s.ppid));
        }
    }
    parents
}

/// CPU seconds used so far by `root` and its descendants, living ones and
/// those that ended and were reaped inside the tree; `None` when `root`
/// is gone. (A descendant that ended unreaped, or whose parent is gone,
/// is not counted: every process this is used on reaps its children.)
pub fn tree_cpu_secs(root: u32) -> Option<f64> {
    let top = stat(root)?;
    let mut ticks = top.ticks + top.child_ticks;
    for pid in descendants(root, &process_parents()) {
        if let Some(s) = stat(pid) {
            ticks += s.ticks + s.child_ticks;
        }
    }
    Some(ticks as f64 / ticks_per_sec())
}

/// A child process whose end is seen without reaping it, so that its CPU
/// time (kept in `/proc` until it is reaped) can still be read.
pub struct Job {
    child: Option<Child>,
    pid: u32,
}

/// How a [`Job`] ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status and what it printed (stdout, stderr when piped).
    pub output: Output,
    /// Its CPU seconds, its reaped children's included.
    pub cpu_secs: f64,
}

impl Job {
    /// Spawns `cmd` with stdout piped (keep what it prints small: it is
    /// read only at the end) and stderr as `cmd` says.
    pub fn spawn(cmd: &mut Command) -> io::Result<Job> {
        let child = cmd.stdout(Stdio::piped()).spawn()?;
        let pid = child.id();
        Ok(Job {
            child: Some(child),
            pid,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it has exited (it stays a zombie until [`Job::finish`]).
    pub fn exited(&self) -> bool {
        stat(self.pid).is_none_or(|s| s.state == 'Z' || s.state == 'X')
    }

    /// Reads its CPU time, then reaps it. Call once it [`Job::exited`];
    /// a job still running is waited for.
    pub fn finish(mut self) -> io::Result<Ended> {
        while !self.exited() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let cpu_secs =
            stat(self.pid).map_or(0.0, |s| (s.ticks + s.child_ticks) as f64 / ticks_per_sec());
        let child = self.child.take().expect("finish takes the job");
        Ok(Ended {
            output: child.wait_with_output()?,
            cpu_secs,
        })
    }

    /// Runs `cmd` to its end: its output and CPU seconds.
    pub fn run(cmd: &mut Command) -> io::Result<Ended> {
        Job::spawn(cmd)?.finish()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A long-running child (a server, a seeding client) killed with its
/// descendants and reaped on drop; its tree's CPU is read while it runs.
pub struct Daemon {
    child: Child,
    what: String,
}

impl Daemon {
    /// Spawns `cmd` (`what` names it in errors), with its output to
    /// `log`.
    pub fn spawn(cmd: &mut Command, what: &str, log: &Path) -> io::Result<Daemon> {
        let file = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(Daemon {
            child,
            what: what.to_owned(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds of it and its descendants so far.
    pub fn cpu_secs(&self) -> f64 {
        tree_cpu_secs(self.pid()).unwrap_or(0.0)
    }

    /// An error when it has exited already (it should be running).
    pub fn check_running(&mut self) -> io::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!(
                "{} exited early: {status}",
                self.what
            ))),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_tree(self.child.id());
        let _ = self.child.wait();
    }
}

/// Polls `f` every `every` until it gives a value or `timeout` passes.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_names_the_process_and_a_clock_token() {
        assert_eq!(prefix_for(42, 0), "lsd-42-000000-");
        assert_eq!(prefix_for(42, 35_000), "lsd-42-00000z-");
        assert_eq!(prefix_for(42, 36_000), "lsd-42-000010-");
        // Wraps within six digits.
        assert_eq!(prefix_for(7, 36u128.pow(6) * 1_000), "lsd-7-000000-");
    }

    #[test]
    fn only_this_runs_namespaces_are_listed() {
        let list =
            "lsd-42-abc123-3 (id: 4)\nlsd-42-abc123-0\nlsd-421-abc123-1\nlsd-43-zz-0\nother\n";
        assert_eq!(
            namespaces_with_prefix(list, "lsd-42-abc123-"),
            ["lsd-42-abc123-3", "lsd-42-abc123-0"]
        );
        assert!(namespaces_with_prefix("", "lsd-1-").is_empty());
    }

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "1234 (we (ird) name) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 31 7 5 20 0 1 0 100 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 77,
                ticks: 281,
                child_ticks: 12
            })
        );
        assert_eq!(parse_stat("1 (x) Z 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_are_found_at_every_depth_and_only_once() {
        let parents = [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (10, 13)];
        let mut d = descendants(10, &parents);
        d.sort_unstable();
        assert_eq!(d, [11, 12, 13]);
        assert!(descendants(99, &parents).is_empty());
    }

    #[test]
    fn a_daemon_is_killed_with_its_children() {
        let d = Daemon::spawn(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30 & wait"]),
            "sh",
            &std::env::temp_dir().join(format!("netrun-test-{}.log", std::process::id())),
        )
        .unwrap();
        let kids = poll(Duration::from_secs(5), Duration::from_millis(10), || {
            let k = descendants(d.pid(), &process_parents());
            (k.len() == 2).then_some(k)
        })
        .expect("two sleeps");
        drop(d);
        for k in kids {
            // Gone, or a zombie until init reaps it (SIGKILL lands when the
            // process next runs: on a busy machine, a moment later).
            let dead = poll(Duration::from_secs(5), Duration::from_millis(10), || {
                stat(k).is_none_or(|s| s.state == 'Z').then_some(())
            });
            assert!(dead.is_some(), "{k} lives on");
        }
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("netrun-test-{}.log", std::process::id())),
        );
    }

    #[test]
    fn a_jobs_cpu_is_read_before_it_is_reaped() {
        // A shell that burns some CPU in a child it reaps, then exits.
        let ended = Job::run(Command::new("sh").args([
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo done",
        ]))
        .unwrap();
        assert!(ended.output.status.success());
        assert_eq!(ended.output.stdout, b"done\n");
        assert!(ended.cpu_secs > 0.0, "{ended:?}");
    }
}
