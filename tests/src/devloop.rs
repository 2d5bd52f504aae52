//! A dev loop on a namespace LAN, for the dev loop's tests and benchmark:
//! `lanseed dev` on host 0 watching a build folder, signing with a dev
//! key made for the run, and device agents following `dev` with
//! `--apply immediate` on the hosts after it, trusting that key for `dev`
//! only.

use std::path::{Path, PathBuf};

use crate::net::{Lan, NodeProc};
use crate::{path_str as s, run_ok};

/// The running loop.
pub struct DevLoop {
    /// The LAN: host 0 runs `lanseed dev`, host `i` device `i`.
    pub lan: Lan,
    /// The dev node's store.
    pub dev_store: PathBuf,
    /// The dev node.
    pub dev: NodeProc,
    /// The device agents (device ids `phone-1`, `phone-2`, …).
    pub devices: Vec<NodeProc>,
}

impl DevLoop {
    /// Starts `lanseed dev` on `build` for `app`, and `devices` agents whose
    /// builtin page is `builtin_html`; keys, stores and logs go in `dir`.
    pub fn start(
        dir: &Path,
        build: &Path,
        app: &str,
        devices: usize,
        builtin_html: &str,
    ) -> DevLoop {
        let lan = Lan::new(devices + 1);
        let key = dir.join("dev.key");
        run_ok(&["keygen", "--out", s(&key)]);
        let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
        let trust = dir.join("dev.trust");
        std::fs::write(&trust, format!("{}  channels=dev\n", public.trim())).unwrap();
        let dev_store = dir.join("devstore");
        let dev = NodeProc::start_cmd(
            &lan.hosts[0],
            "dev",
            &dev_store,
            &[s(build), "--app", app, "--key", s(&key)],
        );
        let builtin = dir.join("builtin");
        std::fs::create_dir_all(&builtin).unwrap();
        std::fs::write(builtin.join("index.html"), builtin_html).unwrap();
        let devices = (1..=devices)
            .map(|i| {
                NodeProc::start_cmd(
                    &lan.hosts[i],
                    "device",
                    &dir.join(format!("device{i}")),
                    &[
                        "--app",
                        app,
                        "--channel",
                        "dev",
                        "--apply",
                        "immediate",
                        "--trust",
                        s(&trust),
                        "--builtin",
                        s(&builtin),
                        "--device-id",
                        &format!("phone-{i}"),
                    ],
                )
            })
            .collect();
        DevLoop {
            lan,
            dev_store,
            dev,
            devices,
        }
    }
}
