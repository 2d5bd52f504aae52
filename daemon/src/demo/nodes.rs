//! The demo's nodes: `lanseed seed` and `lanseed device` run as child
//! processes of this same binary, each with its store and its log
//! (`RUST_LOG=lanseed=info`) in a folder of its own, all with the run's
//! fleet key, all listening on 127.0.0.1 only. [`Nodes`] stops every one
//! on drop (SIGTERM, then SIGKILL after a grace period), so an error or
//! an interruption leaves nothing running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::ctl::Ctl;
use super::error::DemoError;

/// How long a node has to start and answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the nodes have to stop on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where every node listens.
pub const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `lanseed seed`: the publisher's node.
    Seeder,
    /// `lanseed device`: a kiosk.
    Device,
}

impl Role {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Role::Seeder => "seeder",
            Role::Device => "device",
        }
    }
}

/// A running node.
pub struct Node {
    /// Its name (`seeder`, `kiosk-1`, …).
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Its store.
    pub store: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// Its peer id.
    pub peer_id: String,
    /// Its addresses for another node's `--peer`.
    pub p2p_addrs: Vec<String>,
    /// Where a device serves its page.
    pub serve: Option<SocketAddr>,
    child: Child,
}

impl Node {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The length of its log now (to read what comes after).
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Its log from byte `from` on.
    pub fn log_since(&self, from: u64) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// Its page's URL.
    pub fn url(&self) -> Option<String> {
        self.serve.map(|a| format!("http://{a}/"))
    }
}

/// Every node of the run.
#[derive(Default)]
pub struct Nodes {
    /// In start order.
    pub list: Vec<Node>,
}

impl Nodes {
    /// Starts `lanseed ARGS` as node `name` under `dir/name/` (store in
    /// `store/`, log in `node.log`) and waits until it answers on its
    /// control socket (and, for a device, serves its page).
    pub fn start(
        &mut self,
        ctl: &Ctl,
        dir: &Path,
        name: &str,
        role: Role,
        args: &[String],
    ) -> Result<&Node, DemoError> {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).map_err(DemoError::io("cannot create", &home))?;
        let store = home.join("store");
        let log = home.join("node.log");
        let log_file = std::fs::File::create(&log).map_err(DemoError::io("cannot create", &log))?;
        let exe = std::env::current_exe().map_err(DemoError::io(
            "cannot find",
            Path::new("the lanseed binary"),
        ))?;
        let subcommand = match role {
            Role::Seeder => "seed",
            Role::Device => "device",
        };
        let mut cmd = Command::new(&exe);
        // The demo's nodes run with the demo's flags only: no config file,
        // no LANSEED_<FLAG> of the user's environment.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LANSEED_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .arg(subcommand)
            .arg("--store")
            .arg(&store)
            .args(args)
            .env("RUST_LOG", "lanseed=info")
            .env("NO_COLOR", "1")
            .env("LANSEED_NO_CONFIG", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|source| DemoError::Spawn {
                name: name.to_owned(),
                program: exe.display().to_string(),
                source,
            })?;
        self.list.push(Node {
            name: name.to_owned(),
            role,
            store,
            log,
            peer_id: String::new(),
            p2p_addrs: Vec::new(),
            serve: None,
            child,
        });
        let index = self.list.len() - 1;
        // Answering, and listening (its addresses are what others dial).
        let status = ctl.wait(&format!("{name} answering"), START_TIMEOUT, || {
            self.check_alive()?;
            Ok(ctl
                .status(&self.list[index].store)
                .filter(|s| s["listen"].as_array().is_some_and(|l| !l.is_empty())))
        })?;
        let serve = match role {
            Role::Seeder => None,
            Role::Device => {
                Some(
                    ctl.wait(&format!("{name} serving its page"), START_TIMEOUT, || {
                        self.check_alive()?;
                        Ok(serve_addr(&self.list[index].log_text()))
                    })?,
                )
            }
        };
        let node = &mut self.list[index];
        node.peer_id = status["peer_id"].as_str().unwrap_or_default().to_owned();
        node.p2p_addrs = status["listen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .map(|l| format!("{l}/p2p/{}", node.peer_id))
            .collect();
        node.serve = serve;
        Ok(node)
    }

    /// An error when a node has stopped on its own.
    pub fn check_alive(&mut self) -> Result<(), DemoError> {
        for n in &mut self.list {
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(DemoError::NodeDied {
                    name: n.name.clone(),
                    status,
                    log: n.log.clone(),
                });
            }
        }
        Ok(())
    }

    /// The devices.
    pub fn devices(&self) -> impl Iterator<Item = &Node> {
        self.list.iter().filter(|n| n.role == Role::Device)
    }

    /// The seeder.
    pub fn seeder(&self) -> Option<&Node> {
        self.list.iter().find(|n| n.role == Role::Seeder)
    }

    /// Stops every node: SIGTERM to all (each stops cleanly: withdraws
    /// its mDNS record, leaves its store consistent), SIGKILL to any
    /// still running after [`STOP_GRACE`].
    pub fn stop(&mut self) {
        for n in &self.list {
            let _ = kill_process(Pid::from_child(&n.child), Signal::TERM);
        }
        let start = Instant::now();
        for n in &mut self.list {
            while start.elapsed() < STOP_GRACE && matches!(n.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        self.list.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address in a device's `serving the active bundle address=…` log
/// line.
pub fn serve_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("serving the active bundle"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
                .and_then(|a| a.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_says_where_it_serves() {
        let log = "2026-12-02T02:00:00.000001Z  INFO lanseed::device: device started device=kiosk-1\n\
                   2026-12-02T02:00:00.000002Z  INFO lanseed::device: serving the active bundle address=127.0.0.1:41234\n";
        assert_eq!(serve_addr(log), Some("127.0.0.1:41234".parse().unwrap()));
        assert_eq!(serve_addr("nothing here"), None);
    }
}
