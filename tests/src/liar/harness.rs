//! Running the liar from tests: a `lanseed-liar` process inside a
//! namespace, its JSON events collected as they come, and the address a
//! node under test listens on.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::net::{Netns, NodeProc};

/// The `lanseed-liar` binary built next to the running test
/// (`$LANSEED_LIAR_BIN` overrides).
pub fn liar_bin() -> PathBuf {
    crate::bin_named("lanseed-liar", "LANSEED_LIAR_BIN")
}

/// A running liar and the events it printed so far.
pub struct Liar {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Liar {
    /// Starts `lanseed-liar ARGS` inside `ns`.
    pub fn start(ns: &Netns, args: &[&str]) -> Liar {
        let mut cmd = ns.command(&liar_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn lanseed-liar");
        let stdout = child.stdout.take().expect("piped stdout");
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "unparsed", "line": line}));
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
            }
        });
        Liar {
            child,
            events,
            reader: Some(reader),
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The events named `name` so far.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// Waits for an event that satisfies `pred`; panics with every event
    /// seen after `timeout`.
    pub fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                start.elapsed() < timeout,
                "the liar printed no {what} within {timeout:?}; it printed:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the event named `name`.
    pub fn wait_named(&self, name: &str, timeout: Duration) -> Value {
        self.wait_event(name, timeout, |e| e["event"] == name)
    }

    /// Every event, one per line, for failure messages.
    pub fn dump(&self) -> String {
        self.events()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for the liar to exit by itself; kills it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "the liar did not exit within {timeout:?}; it printed:\n{}",
                    self.dump()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM (it closes its connections and withdraws its
    /// mDNS records) and waits.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(Duration::from_secs(15))
    }
}

impl Drop for Liar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address `node` listens on, with its peer id: the first
/// `listening address=` of its log (start it with one `--listen`).
pub fn node_addr(node: &NodeProc) -> String {
    let t = Duration::from_secs(30);
    let line = node.wait_log("listening address=", t);
    let addr = line
        .split("address=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("an address")
        .to_owned();
    format!("{addr}/p2p/{}", node_peer_id(node))
}

/// The peer id of `node`, from its log.
pub fn node_peer_id(node: &NodeProc) -> String {
    let line = node.wait_log("node started", Duration::from_secs(30));
    line.split("peer_id=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("a peer id")
        .to_owned()
}

/// A path as an argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}
