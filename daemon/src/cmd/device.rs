//! `lanseed device`: the agent, and requests to a running one.

use anyhow::Context;
use lanseed_client::{ApplyMode, UpdaterConfig};
use lanseed_protocol::TrustList;

use crate::cli::{DeviceAction, DeviceArgs, DeviceRunArgs};
use crate::device::control::{DeviceRequest, request};
use crate::device::{self, DeviceConfig};

pub fn run(args: DeviceArgs) -> anyhow::Result<()> {
    match args.action {
        None => agent(args.run),
        Some(action) => talk(action),
    }
}

fn talk(action: DeviceAction) -> anyhow::Result<()> {
    let (store, req) = match action {
        DeviceAction::Reset(s) => (s.store, DeviceRequest::Reset),
        DeviceAction::List(s) => (s.store, DeviceRequest::List),
        DeviceAction::Reload(s) => (s.store, DeviceRequest::Reload),
        DeviceAction::Channel { name, store } => (store.store, DeviceRequest::Channel { name }),
        DeviceAction::Delete { id, store } => (store.store, DeviceRequest::Delete { id }),
    };
    let root = store.path()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(request(&root, &req))?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

fn agent(args: DeviceRunArgs) -> anyhow::Result<()> {
    let app = args
        .app
        .context("lanseed device needs --app: the app id this device runs")?;
    lanseed_protocol::release::check_app_id(&app)?;
    if let Some(channel) = &args.channel {
        lanseed_protocol::release::check_channel(channel)?;
    }
    let trust_path = args
        .trust
        .context("lanseed device needs --trust FILE: the keys whose releases it installs")?;
    let builtin = args
        .builtin
        .context("lanseed device needs --builtin DIR: the web build shipped with the app")?;
    if !builtin.join("index.html").is_file() {
        anyhow::bail!("--builtin {} has no index.html", builtin.display());
    }
    let trust = TrustList::read(&trust_path)?;
    let store = args.store.create()?;
    let cfg = DeviceConfig {
        node: super::seed::node_config(&args.node, store, Vec::new(), trust)?,
        updater: UpdaterConfig {
            app,
            channel: args.channel,
            device_id: args.device_id,
            native_version: args.native_version,
            builtin,
            app_ready_timeout: args.app_ready_timeout,
            apply: match &args.apply_window {
                Some(w) => {
                    ApplyMode::window(w).map_err(|e| anyhow::anyhow!("--apply-window {e}"))?
                }
                None if args.apply == "immediate" => ApplyMode::Immediate,
                None => ApplyMode::NextStart,
            },
            auto_delete_failed: !args.keep_failed,
            auto_delete_previous: !args.keep_previous,
        },
        serve: args.serve,
        serve_names: args.serve_names,
    };
    let runtime = super::node_runtime(false)?;
    runtime.block_on(async { device::run(cfg, super::seed::shutdown_signal()?).await })
}
