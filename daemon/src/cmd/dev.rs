//! `lanseed dev`: resolves the project (the folder, the app, the dev store
//! and key), prints the trust line devices need, and runs the loop.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use lanseed_protocol::trust::TrustEntry;
use lanseed_protocol::{SecretKey, Store, TrustList};

use crate::cli::DevArgs;
use crate::dev::{self, CHANNEL, DevConfig, config};

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir()?;
    let project = config::find(&cwd)?;
    let dir = match (&args.dir, project.as_ref().and_then(|p| p.web_dir.clone())) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d,
        (None, None) => anyhow::bail!(
            "lanseed dev needs a build folder: lanseed dev DIR, or run it in a Capacitor project (capacitor.config.json or .ts with webDir)"
        ),
    };
    let app = match (&args.app, project.as_ref().and_then(|p| p.app.clone())) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => a,
        (None, None) => anyhow::bail!(
            "lanseed dev needs the app id: --app APP, or appId in capacitor.config.json or .ts"
        ),
    };
    lanseed_protocol::release::check_app_id(&app)?;
    if let Some(p) = &project {
        eprintln!("project: {} ({})", app, p.file.display());
    }
    let store_path = match &args.store {
        Some(s) => s.clone(),
        None => dirs::data_dir()
            .context("cannot find your data folder; pass --store DIR")?
            .join("lanseed")
            .join("dev")
            .join(&app),
    };
    let store = Store::create(&store_path)?;
    let key_path = match &args.key {
        Some(k) => k.clone(),
        None => dirs::config_dir()
            .context("cannot find your config folder; pass --key FILE")?
            .join("lanseed")
            .join("dev.key"),
    };
    let key = dev_key(&key_path)?;
    print_trust_line(&key, &key_path);
    let mut trust = TrustList::default();
    trust.push(TrustEntry {
        key: key.public(),
        apps: vec![app.clone()],
        channels: vec![CHANNEL.into()],
    });
    let node = super::seed::node_config(&args.node, store, Vec::new(), trust)?;
    let cfg = DevConfig {
        node,
        dir,
        app,
        key: Arc::new(key),
        keep: args.keep as usize,
        quiet: args.quiet,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async { dev::run(cfg, super::seed::shutdown_signal()?).await })
}

/// The dev key at `path`, made on first use.
fn dev_key(path: &Path) -> anyhow::Result<SecretKey> {
    if path.exists() {
        return Ok(SecretKey::read(path)?);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let key = SecretKey::generate()?;
    key.write(path, false)?;
    eprintln!(
        "made a dev key: {} (for channel {CHANNEL} only; never use it for production)",
        path.display()
    );
    Ok(key)
}

/// The trust line a test device needs, scoped to `dev`, and a QR code of it.
fn print_trust_line(key: &SecretKey, path: &Path) {
    let line = format!("{}  channels={CHANNEL}", key.public());
    let line = line.as_str();
    eprintln!(
        "dev key {}; add this line to your test devices' trust file:",
        path.display()
    );
    println!("{line}");
    if let Ok(code) = qrcode::QrCode::new(line.as_bytes()) {
        let art = code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build();
        eprintln!("{art}");
    }
}
