//! `lanseed-sim`: a discrete-event simulation of one publisher fanning a
//! bundle out to N followers that run lanseed's own piece scheduler
//! (`lanseed_tests::sim`). Prints the time until every follower holds it,
//! its ratio to the fluid lower bound, what the publisher uploaded, the
//! messages each node sends a second and its connections.
//!
//! ```sh
//! cargo run --release -p lanseed-tests --bin lanseed-sim -- --nodes 16 --mbit 50
//! ```

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use lanseed_tests::sim::engine::{self, Config, DEFAULT_MAX_CONNECTIONS};
use lanseed_tests::sim::events::{MS, SEC};
use lanseed_tests::sim::network::Order;
use lanseed_tests::sim::uploads::DEFAULT_MAX as DEFAULT_MAX_UPLOADS;
use lanseed_tests::sim::workload::Spec;

#[derive(Parser, Debug)]
#[command(
    name = "lanseed-sim",
    about = "Simulates lanseed's fan-out to N followers"
)]
struct Args {
    /// Followers (the publisher comes on top).
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Every link's rate, megabits a second, both ways.
    #[arg(long, default_value_t = 50.0)]
    mbit: f64,
    /// Share of the link rate lanseed's payload gets: tbf holds about 96 %
    /// for TCP, and noise, yamux and framing take about 5 % more.
    #[arg(long, default_value_t = 0.91)]
    efficiency: f64,
    /// Bundle size, megabytes (10^6 bytes).
    #[arg(long, default_value_t = 20.0)]
    bundle_mb: f64,
    /// Of it, megabytes of JS and CSS.
    #[arg(long, default_value_t = 4.0)]
    text_mb: f64,
    /// How many JS and CSS files.
    #[arg(long, default_value_t = 500)]
    text_files: u32,
    /// How many media files.
    #[arg(long, default_value_t = 24)]
    media_files: u32,
    /// Wire bytes over raw bytes for JS and CSS (zstd).
    #[arg(long, default_value_t = 0.3)]
    text_ratio: f64,
    /// One-way latency of every message, milliseconds.
    #[arg(long, default_value_t = 0.2)]
    latency_ms: f64,
    /// Answers on one connection share it equally, all at once (else they
    /// go one after the other, which matches the namespace runs better).
    #[arg(long)]
    shared: bool,
    /// Share of followers that join late (at a random time in the window).
    #[arg(long, default_value_t = 0.0)]
    join_late: f64,
    /// Share of followers that leave (at a random time in the window).
    #[arg(long, default_value_t = 0.0)]
    leave: f64,
    /// The window of late joins and leaves, seconds from the start.
    #[arg(long, default_value_t = 2.0)]
    window_s: f64,
    /// `--max-uploads` of every node.
    #[arg(long, default_value_t = DEFAULT_MAX_UPLOADS)]
    max_uploads: usize,
    /// Most peers a node is connected to (the node's connection limit);
    /// a small number here is the bounded-neighbour variant.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Preparing an answer (read, compress), nanoseconds per byte.
    #[arg(long, default_value_t = 2.0)]
    serve_ns_per_byte: f64,
    /// Verifying and writing an answer, nanoseconds per byte.
    #[arg(long, default_value_t = 2.0)]
    verify_ns_per_byte: f64,
    /// Opening the manifest, milliseconds.
    #[arg(long, default_value_t = 20.0)]
    open_ms: f64,
    /// Committing the release, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    commit_ms: f64,
    /// Gives up at this simulated time, seconds.
    #[arg(long, default_value_t = 600.0)]
    sim_limit_s: f64,
    /// Gives up after this much wall clock, seconds.
    #[arg(long, default_value_t = 540)]
    wall_limit_s: u64,
    /// Seeds everything random.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn ms(x: f64) -> u64 {
    (x * MS as f64) as u64
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.nodes == 0 || a.mbit <= 0.0 || a.bundle_mb <= 0.0 || a.text_mb > a.bundle_mb {
        bail!("need --nodes ≥ 1, --mbit > 0, 0 < --text-mb ≤ --bundle-mb");
    }
    if !(0.0..=1.0).contains(&(a.join_late + a.leave)) || a.join_late < 0.0 || a.leave < 0.0 {
        bail!("--join-late and --leave are shares: each ≥ 0, together ≤ 1");
    }
    let cfg = Config {
        nodes: a.nodes,
        mbit: a.mbit,
        efficiency: a.efficiency,
        latency: ms(a.latency_ms),
        order: if a.shared { Order::Shared } else { Order::Fifo },
        join_late: a.join_late,
        leave: a.leave,
        window: ms(a.window_s * 1000.0),
        seed: a.seed,
        bundle: Spec {
            bytes: (a.bundle_mb * 1e6) as u64,
            text_bytes: (a.text_mb * 1e6) as u64,
            text_files: a.text_files,
            media_files: a.media_files,
            text_ratio: a.text_ratio,
            seed: a.seed,
        },
        max_uploads: a.max_uploads,
        max_connections: a.max_connections.max(1),
        serve_ns_per_byte: a.serve_ns_per_byte,
        verify_ns_per_byte: a.verify_ns_per_byte,
        open: ms(a.open_ms),
        commit: ms(a.commit_ms),
        sim_limit: (a.sim_limit_s * SEC as f64) as u64,
        wall_limit: Duration::from_secs(a.wall_limit_s),
    };
    let r = engine::run(&cfg);
    println!(
        "nodes {} mbit {} bundle {:.2} MB ({:.2} MB on the wire) latency {} ms join-late {} leave {} max-connections {} seed {}",
        a.nodes,
        a.mbit,
        r.bundle_bytes as f64 / 1e6,
        r.bundle_wire as f64 / 1e6,
        a.latency_ms,
        a.join_late,
        a.leave,
        a.max_connections,
        a.seed
    );
    match r.time_to_all {
        Some(t) => println!(
            "time to all        {t:.2} s  ({:.2} x the bound of {:.2} s)",
            t / r.bound,
            r.bound
        ),
        None => println!(
            "time to all        not reached: {} of {} followers whole at {:.2} s (bound {:.2} s)",
            r.done, r.followers, r.sim_secs, r.bound
        ),
    }
    println!(
        "publisher upload   {:.2} x the bundle (wire bytes over raw; about 5 % more at the interface); endgame duplicates {:.2} bundles in all",
        r.publisher_upload, r.duplicates
    );
    println!(
        "per node and s     Have {:.1} (most {:.1} out, {:.1} in; {:.1} KB/s out)  requests {:.1}  answers {:.1} (refused {:.1})",
        r.haves_per_sec,
        r.haves_per_sec_max,
        r.haves_in_per_sec_max,
        r.have_bytes_per_sec_max / 1e3,
        r.requests_per_sec,
        r.answers_per_sec,
        r.refusals_per_sec
    );
    println!(
        "connections        {} peers at most; {} flows at once at most",
        r.max_connections, r.max_active_flows
    );
    println!(
        "scheduler          {:.1} drives per node and s, {:.1} us each ({:.0} % of a core)",
        r.drives_per_sec,
        r.drive_us,
        r.drives_per_sec * r.drive_us / 1e4
    );
    println!(
        "simulator          {} events in {:.1} s wall",
        r.events, r.wall_secs
    );
    if let Some(why) = r.stopped {
        println!("stopped early      {why}");
    }
    Ok(())
}
