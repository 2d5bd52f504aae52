//! `lanseed-bench`: benchmarks that print the figures `docs/PERF.md`
//! records. Build and run in release mode:
//!
//! ```text
//! cargo build --release -p lanseed -p lanseed-tests
//! target/release/lanseed-bench pack
//! ```
//!
//! `pack` generates a web build (2,000 files, 20 MB by default), reads it
//! once so it sits in the page cache, then measures, each `--runs` times and
//! reporting the median, each run after a `sync(2)` so it pays only for its
//! own writes: hashing alone (the manifest of the folder, nothing
//! written), the library's full pack into an empty store (with its
//! durability: two `syncfs` and the index commit), and the `lanseed pack`
//! process end to end, with its peak RSS.
#![allow(unsafe_code)] // getrusage, to read the child's peak RSS.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lanseed_protocol::SecretKey;
use lanseed_protocol::pack::{PackOptions, manifest_of_dir, pack_dir};
use lanseed_protocol::release::Rollout;
use lanseed_tests::{generate_build, lanseed_bin};

struct Args {
    files: usize,
    mb: u64,
    runs: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<(String, Args)> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    let mut args = Args {
        files: 2_000,
        mb: 20,
        runs: 7,
        dir: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--files" => args.files = value()?.parse()?,
            "--mb" => args.mb = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--dir" => args.dir = Some(value()?.into()),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok((cmd, args))
}

fn main() -> anyhow::Result<()> {
    let (cmd, args) = parse_args()?;
    match cmd.as_str() {
        "pack" => bench_pack(&args),
        "zip" => bench_zip(&args),
        _ => {
            eprintln!(
                "usage: lanseed-bench pack|zip [--files N] [--mb MB] [--runs N] [--dir DIR]\n\
                 (run from a release build: cargo build --release -p lanseed -p lanseed-tests)"
            );
            std::process::exit(2);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn bench_pack(args: &Args) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures are meaningless (use --release)");
    }
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let build = tmp.path().join("build");
    generate_build(&build, args.files, args.mb * 1_000_000, 2026);
    let none = |_| {};
    // Warm the page cache and learn the size.
    let manifest = manifest_of_dir(&build, &none)?;
    let bytes = manifest.total_size();
    println!(
        "build: {} files, {:.1} MB, in {}",
        manifest.files().len(),
        bytes as f64 / 1e6,
        tmp.path().display()
    );

    let mut hash_times = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let m = manifest_of_dir(&build, &none)?;
        hash_times.push(t.elapsed());
        assert_eq!(m.id(), manifest.id());
    }

    // The disk's floor: merely copying the same files into a fresh folder
    // (no hashing, no sync) costs this much on this machine right now.
    let mut copy_times = Vec::new();
    for i in 0..args.runs {
        let dest = tmp.path().join(format!("copy-{i}"));
        quiesce();
        let t = Instant::now();
        copy_flat(&build, &dest)?;
        copy_times.push(t.elapsed());
        std::fs::remove_dir_all(&dest)?;
    }

    let key_path = tmp.path().join("key");
    let key = SecretKey::generate()?;
    key.write(&key_path, false)?;
    let opts = PackOptions {
        app: "com.example.bench".into(),
        channel: "production".into(),
        version: "1.0.0".into(),
        seq: None,
        created: 1_800_000_000,
        min_native_version: None,
        rollout: Rollout::FULL,
        expires: None,
        notes: None,
        capgo: None,
    };
    let mut lib_times = Vec::new();
    for i in 0..args.runs {
        let store_dir = tmp.path().join(format!("lib-store-{i}"));
        let store = lanseed_protocol::Store::create(&store_dir)?;
        quiesce();
        let t = Instant::now();
        let packed = pack_dir(&store, &build, &opts, &key, &none)?;
        lib_times.push(t.elapsed());
        assert_eq!(packed.manifest.id(), manifest.id());
        std::fs::remove_dir_all(&store_dir)?;
    }

    let bin = lanseed_bin();
    let mut proc_times = Vec::new();
    for i in 0..args.runs {
        let store_dir = tmp.path().join(format!("cli-store-{i}"));
        quiesce();
        let t = Instant::now();
        let out = std::process::Command::new(&bin)
            .args([
                "pack",
                build.to_str().unwrap(),
                "--app",
                "com.example.bench",
            ])
            .args(["--version", "1.0.0", "--key", key_path.to_str().unwrap()])
            .args(["--store", store_dir.to_str().unwrap()])
            .output()?;
        proc_times.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "lanseed pack failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(&store_dir)?;
    }
    let peak_rss_kib = children_peak_rss_kib();

    let (h, l, p) = (median(hash_times), median(lib_times), median(proc_times));
    let c = median(copy_times);
    println!(
        "median of {} runs, sources in page cache, empty store each run:",
        args.runs
    );
    println!(
        "  hashing only (BLAKE3 + SHA-256 + pieces)   {:>8.1} ms  {:>7.0} MB/s",
        h.as_secs_f64() * 1e3,
        mb_per_s(bytes, h)
    );
    println!(
        "  baseline: copy the files, no hash, no sync {:>8.1} ms  {:>7.0} MB/s",
        c.as_secs_f64() * 1e3,
        mb_per_s(bytes, c)
    );
    println!(
        "  pack, library, with durability            {:>8.1} ms  {:>7.0} MB/s",
        l.as_secs_f64() * 1e3,
        mb_per_s(bytes, l)
    );
    println!(
        "  `lanseed pack` process end to end         {:>8.1} ms  {:>7.0} MB/s",
        p.as_secs_f64() * 1e3,
        mb_per_s(bytes, p)
    );
    println!(
        "  `lanseed pack` peak RSS                   {:>8.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    Ok(())
}

/// Export and import throughput: release files out of and into a store,
/// the deterministic bundle zip, and packing from a zip.
fn bench_zip(args: &Args) -> anyhow::Result<()> {
    use lanseed_protocol::pack::pack_zip;
    use lanseed_protocol::release_file::{ReleaseFile, export, export_bundle_zip};
    use lanseed_protocol::zip::{Layout, SafeZip, ZipLimits};
    use lanseed_protocol::{Store, TrustList};

    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let build = tmp.path().join("build");
    generate_build(&build, args.files, args.mb * 1_000_000, 2026);
    let key = SecretKey::generate()?;
    let trust = TrustList::parse(&key.public().to_string())
        .map_err(|(line, e)| anyhow::anyhow!("trust line {line}: {e}"))?;
    let mut opts = PackOptions {
        app: "com.example.bench".into(),
        channel: "production".into(),
        version: "1.0.0".into(),
        seq: Some(1),
        created: 1_800_000_000,
        min_native_version: None,
        rollout: Rollout::FULL,
        expires: None,
        notes: None,
        capgo: None,
    };
    let none = |_| {};
    let source = Store::create(&tmp.path().join("source"))?;
    let packed = pack_dir(&source, &build, &opts, &key, &none)?;
    let bytes = packed.manifest.total_size();
    let file = tmp.path().join("release.lanseed");
    let zip = tmp.path().join("bundle.zip");
    let (mut t_export, mut t_import, mut t_zip, mut t_pack_zip) = (vec![], vec![], vec![], vec![]);
    for i in 0..args.runs {
        quiesce();
        let t = Instant::now();
        export(&source, &packed.release, &file)?;
        t_export.push(t.elapsed());

        let dest = Store::create(&tmp.path().join(format!("import-{i}")))?;
        quiesce();
        let t = Instant::now();
        ReleaseFile::open(&file, &trust, ZipLimits::default())?.import(&dest)?;
        t_import.push(t.elapsed());

        quiesce();
        let t = Instant::now();
        export_bundle_zip(&source, &packed.release.release().bundle_id, &zip)?;
        t_zip.push(t.elapsed());

        let dest = Store::create(&tmp.path().join(format!("zip-{i}")))?;
        opts.seq = Some(2);
        quiesce();
        let t = Instant::now();
        let z = SafeZip::open(&zip, ZipLimits::default(), Layout::Bundle)?;
        let again = pack_zip(&dest, z, &opts, &key, &none)?;
        t_pack_zip.push(t.elapsed());
        assert_eq!(again.manifest.id(), packed.manifest.id());
    }
    let (file_size, zip_size) = (
        std::fs::metadata(&file)?.len(),
        std::fs::metadata(&zip)?.len(),
    );
    println!(
        "build: {} files, {:.1} MB; release file {:.1} MB, bundle zip {:.1} MB; in {}",
        packed.manifest.files().len(),
        bytes as f64 / 1e6,
        file_size as f64 / 1e6,
        zip_size as f64 / 1e6,
        tmp.path().display()
    );
    println!("median of {} runs, MB/s of bundle bytes:", args.runs);
    for (name, times) in [
        ("export: release file (sealed zip, fsync)", t_export),
        ("import: release file into an empty store", t_import),
        ("export: deterministic bundle zip", t_zip),
        ("pack from the bundle zip, empty store", t_pack_zip),
    ] {
        let m = median(times);
        println!(
            "  {name:<44} {:>8.1} ms  {:>7.0} MB/s",
            m.as_secs_f64() * 1e3,
            mb_per_s(bytes, m)
        );
    }
    Ok(())
}

/// Copies every file under `from` into `to`, flattened (one directory),
/// the way the store's blobs are written: one new file each.
fn copy_flat(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    let mut stack = vec![from.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                std::fs::write(to.join(n.to_string()), std::fs::read(&p)?)?;
                n += 1;
            }
        }
    }
    Ok(())
}

/// Flushes every dirty page of every file system and waits a moment, so
/// a run pays for its own writes, not for the previous run's (deleting the
/// last store queues as much journal work as a pack).
fn quiesce() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(200));
}

/// Largest peak RSS of any waited-for child, in KiB.
fn children_peak_rss_kib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    if rc == 0 { usage.ru_maxrss } else { -1 }
}
