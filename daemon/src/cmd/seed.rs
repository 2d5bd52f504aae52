//! `lanseed seed` (the node) and `lanseed status` (asking it).

use anyhow::{Context, bail};
use lanseed_protocol::TrustList;
use lanseed_protocol::release::{check_app_id, check_channel};

use crate::cli::{NodeArgs, OriginArgs, SeedArgs, StatusArgs};
use crate::control_socket::Access;
use crate::node::{self, Follow, Mdns, NodeConfig};

pub(crate) fn parse_follow(text: &str) -> anyhow::Result<Follow> {
    let (app, channel) = match text.split_once(':') {
        Some((a, c)) => (a, Some(c.to_owned())),
        None => (text, None),
    };
    check_app_id(app)?;
    if let Some(c) = &channel {
        check_channel(c)?;
    }
    Ok(Follow {
        app: app.to_owned(),
        channel,
        above: 0,
    })
}

pub(crate) fn read_fleet_key(path: &std::path::Path) -> anyhow::Result<libp2p::pnet::PreSharedKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read fleet key {}", path.display()))?;
    text.parse().map_err(|e| {
        anyhow::anyhow!(
            "{} is not a fleet key ({e}); make one with `lanseed keygen --fleet --out FILE`",
            path.display()
        )
    })
}

pub fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let follow = args
        .follow
        .iter()
        .map(|f| parse_follow(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let trust = match &args.trust {
        Some(p) => TrustList::read(p)?,
        None if !follow.is_empty() => {
            bail!("--follow needs --trust FILE: the keys whose releases may be fetched")
        }
        None => TrustList::default(),
    };
    let origin = origin_config(&args.origin)?;
    let store = args.store.create()?;
    let mut cfg = node_config(&args.node, store.clone(), follow.clone(), trust.clone())?;
    let runtime = super::node_runtime(origin.is_some())?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let Some(origin) = origin else {
            return node::run(cfg, shutdown).await;
        };
        // The site cache runs beside the node and stops with it; what it
        // commits, the node's store watch announces on the LAN.
        let cancel = tokio_util::sync::CancellationToken::new();
        let (handle, task) = crate::origin::spawn(origin, store, trust, follow, cancel.clone())
            .map_err(anyhow::Error::msg)?;
        cfg.origin_status = Some(std::sync::Arc::new(move || handle.status_json()));
        let stop = cancel.clone();
        let result = node::run(cfg, async move {
            shutdown.await;
            stop.cancel();
        })
        .await;
        cancel.cancel();
        let _ = task.await;
        result
    })
}

/// The site cache's settings from `--origin*`, if it has an origin.
fn origin_config(args: &OriginArgs) -> anyhow::Result<Option<crate::origin::OriginConfig>> {
    let Some(url) = &args.origin else {
        return Ok(None);
    };
    let url: reqwest::Url = url.parse().map_err(|e| {
        anyhow::anyhow!(
            "--origin `{url}` is not a URL ({e}), e.g. https://updates.example.com/tree/"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--origin `{url}` is not an http or https URL");
    }
    let headers = args
        .origin_header
        .iter()
        .map(|h| crate::origin::http::parse_header(h).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(crate::origin::OriginConfig {
        url,
        every: args.origin_every.max(std::time::Duration::from_millis(100)),
        headers,
        rate: args.origin_rate,
    }))
}

/// The node's configuration from its command-line flags.
pub(crate) fn node_config(
    args: &NodeArgs,
    store: lanseed_protocol::Store,
    follow: Vec<Follow>,
    trust: TrustList,
) -> anyhow::Result<NodeConfig> {
    let parse_addrs = |list: &[String], flag: &str| -> anyhow::Result<Vec<libp2p::Multiaddr>> {
        list.iter()
            .map(|a| {
                a.parse().map_err(|e| {
                    anyhow::anyhow!(
                        "{flag} `{a}` is not a multiaddr ({e}), e.g. /ip4/10.0.0.5/tcp/4001"
                    )
                })
            })
            .collect()
    };
    Ok(NodeConfig {
        store,
        listen: parse_addrs(&args.listen, "--listen")?,
        peers: parse_addrs(&args.peer, "--peer")?,
        follow,
        trust,
        fleet_key: args.fleet_key.as_deref().map(read_fleet_key).transpose()?,
        mdns: match (args.no_mdns, &args.mdns_interface) {
            (true, _) => Mdns::Off,
            (false, Some(name)) => Mdns::Interface(name.clone()),
            (false, None) => Mdns::All,
        },
        request_timeout: args.request_timeout,
        upload_limit: args.upload_limit,
        max_uploads: args.max_uploads as usize,
        limit_loopback: args.limit_loopback,
        min_free: args.min_free,
        follow_updates: None,
        control_access: Access::for_group(args.control_group.as_deref())?,
        reports: None,
        device_events: None,
        store_changed: None,
        extra_status: None,
        origin_status: None,
        progress: None,
        gateway: args.gateway.http.map(|addr| crate::gateway::Options {
            addr,
            tls: args
                .gateway
                .tls_cert
                .clone()
                .zip(args.gateway.tls_key.clone()),
        }),
        metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (inside the runtime, before the node starts), so a signal during
/// start-up still ends in a clean stop.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
    })
}

/// `lanseed fleet`: the devices table of the node running on `--store`.
pub fn fleet(args: StatusArgs) -> anyhow::Result<()> {
    let store = args.store.path()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(node::control::request_status(&store))?;
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(());
    }
    if devices.is_empty() {
        println!("no device heard of yet");
        return Ok(());
    }
    let now = super::now();
    let text = |d: &serde_json::Value, k: &str| d[k].as_str().unwrap_or("").to_owned();
    let rows: Vec<[String; 8]> = devices
        .iter()
        .map(|d| {
            let ago = now.saturating_sub(d["last_seen"].as_u64().unwrap_or(0));
            let trust = match (d["source"].as_str(), d["authenticated"] == true) {
                (Some("gateway"), _) => "gateway (plain HTTP)",
                (_, true) => "fleet",
                (_, false) => "unauthenticated",
            };
            [
                text(d, "device_id"),
                format!("{} / {}", text(d, "app"), text(d, "channel")),
                text(d, "version"),
                text(d, "status"),
                d["last_event"].as_str().unwrap_or("-").to_owned(),
                format!("{ago}s ago"),
                if d["stale"] == true {
                    "STALE".into()
                } else {
                    String::new()
                },
                trust.into(),
            ]
        })
        .collect();
    let head = [
        "DEVICE",
        "APP / CHANNEL",
        "VERSION",
        "STATUS",
        "LAST EVENT",
        "SEEN",
        "",
        "SOURCE",
    ];
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            out.push_str(&format!("{c:<w$}  "));
        }
        out.trim_end().to_owned()
    };
    println!("{}", line(head.to_vec()));
    for r in &rows {
        println!("{}", line(r.iter().map(String::as_str).collect()));
    }
    let stale = devices.iter().filter(|d| d["stale"] == true).count();
    println!(
        "{} devices{}",
        devices.len(),
        if stale > 0 {
            format!(", {stale} stale")
        } else {
            String::new()
        }
    );
    Ok(())
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let store = args.store.path()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(node::control::request_status(&store))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let peer_id = status["peer_id"].as_str().unwrap_or("?");
    println!("node {peer_id}");
    let listen = status["listen"].as_array().cloned().unwrap_or_default();
    if !listen.is_empty() {
        println!("  listening on (for another node's --peer):");
    }
    for l in &listen {
        println!("    {}/p2p/{peer_id}", l.as_str().unwrap_or(""));
    }
    if let Some(why) = status["waiting"].as_str() {
        println!("  {why}");
    }
    for d in status["dialling"].as_array().into_iter().flatten() {
        println!(
            "  --peer {} has not answered yet; next dial in {}s",
            d["address"].as_str().unwrap_or(""),
            d["in_secs"]
        );
    }
    for r in status["retrying"].as_array().into_iter().flatten() {
        println!(
            "  transfer of {} failed on the store; trying again in {}s",
            r["version"].as_str().unwrap_or(""),
            r["in_secs"]
        );
    }
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    println!("{} peers", peers.len());
    for p in &peers {
        println!(
            "  {} {} (found by {}, {} releases announced) {}",
            p["peer_id"].as_str().unwrap_or(""),
            if p["banned"] == true {
                "banned"
            } else if p["connected"] == true {
                "connected"
            } else {
                "not connected"
            },
            p["found_by"].as_str().unwrap_or(""),
            p["releases_announced"],
            p["addresses"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|a| a.as_str())
                .unwrap_or("")
        );
    }
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    if !devices.is_empty() {
        println!("{} devices", devices.len());
    }
    for d in &devices {
        println!(
            "  {} {} on {}: {} ({}){}{}",
            d["device_id"].as_str().unwrap_or(""),
            d["app"].as_str().unwrap_or(""),
            d["channel"].as_str().unwrap_or(""),
            d["version"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            d["last_event"]
                .as_str()
                .map(|e| format!(", last event {e}"))
                .unwrap_or_default(),
            if d["authenticated"] == true {
                ""
            } else if d["source"] == "gateway" {
                " [gateway stats: plain HTTP, unauthenticated]"
            } else {
                " [unauthenticated: no fleet key]"
            }
        );
    }
    print_origin(&status["origin"]);
    let releases = status["releases"].as_array().cloned().unwrap_or_default();
    println!("{} releases", releases.len());
    for r in &releases {
        println!(
            "  {} {} on {} (seq {})",
            r["app"].as_str().unwrap_or(""),
            r["version"].as_str().unwrap_or(""),
            r["channel"].as_str().unwrap_or(""),
            r["seq"]
        );
    }
    let transfers = status["transfers"].as_array().cloned().unwrap_or_default();
    println!("{} transfers", transfers.len());
    for t in &transfers {
        println!(
            "  {} {} {}: {}/{} bytes, {:.1} MB/s, {} peers",
            t["app"].as_str().unwrap_or(""),
            t["version"].as_str().unwrap_or(""),
            t["state"].as_str().unwrap_or(""),
            t["bytes_done"],
            t["bytes_total"],
            t["rate_bytes_per_sec"].as_f64().unwrap_or(0.0) / 1e6,
            t["providers"]
        );
        if t["reused_bytes"].as_u64().unwrap_or(0) > 0 {
            println!(
                "    resumed: {} bytes reused from an earlier run",
                t["reused_bytes"]
            );
        }
    }
    let up = &status["uploads"];
    let limit = match up["limit_bytes_per_sec"].as_u64() {
        Some(r) => format!("{:.2} MB/s limit", r as f64 / 1e6),
        None => "no limit".to_owned(),
    };
    println!(
        "uploads: {} bytes in {} answers; {} of {} peers served now (peak {}), {} requests told busy, {} held back (a piece on its way to another peer); {limit}",
        up["bytes"],
        up["answers"],
        up["active_peers"],
        up["max_peers"],
        up["peak_peers"],
        up["refused"],
        up["held_back"]
    );
    let refused = status["refused"].as_array().cloned().unwrap_or_default();
    if !refused.is_empty() {
        println!("{} peers misbehaved (newest first)", refused.len());
        for r in &refused {
            println!(
                "  {} {} ×{} ({}s ago): {}",
                r["peer_id"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or(""),
                r["count"],
                r["secs_ago"],
                r["reason"].as_str().unwrap_or("")
            );
        }
    }
    let d = &status["dropped"];
    println!(
        "dropped: {} connections, {} announcements, {} haves, {} malformed frames, {} releases refused, {} peer names refused, {} forgotten",
        d["connections_refused"],
        d["announcements"],
        d["haves"],
        d["malformed_frames"],
        d["releases_refused"],
        d["peers_refused"],
        d["peers_forgotten"]
    );
    Ok(())
}

/// The site cache's part of `lanseed status`, if the node has an origin.
fn print_origin(o: &serde_json::Value) {
    let Some(url) = o["url"].as_str() else {
        return;
    };
    println!("origin {url}");
    let polled = match o["last_poll"].as_u64() {
        Some(t) => format!("{}s ago", super::now().saturating_sub(t)),
        None => "not yet".into(),
    };
    println!(
        "  last poll {polled}: {}; next in {}s",
        o["last_result"].as_str().unwrap_or("-"),
        o["next_poll_secs"]
    );
    if let Some(e) = o["last_error"].as_str() {
        println!("  {e}");
    }
    let pending = format!(
        "{} blobs ({} bytes) to fetch",
        o["blobs_pending"], o["bytes_pending"]
    );
    match o["syncing"].as_str() {
        Some(r) => println!("  syncing {r}: {pending}"),
        None if o["blobs_pending"].as_u64().unwrap_or(0) > 0 => println!("  still {pending}"),
        None => {}
    }
    println!(
        "  fetched {} bytes, {} blobs, {} releases since start",
        o["bytes_fetched"], o["blobs_fetched"], o["releases_added"]
    );
}
