//! The throughput benchmark runs end to end on a small bundle: the raw
//! stream from memory and from several files, a lanseed fetch, and every
//! figure it prints (figures themselves go in docs/PERF.md, not in
//! assertions). Needs the namespace `../shared/tools/isolated` gives:
//! the nodes listen on loopback with mDNS off.

use std::process::Command;

/// The numbers in `line` after `label` (e.g. "raw file sender 1.50").
fn figure(out: &str, line_start: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no line starting {line_start:?} in:\n{out}"));
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"));
    line[at + label.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.trim_end_matches([',', ';']).parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
}

#[test]
fn swarmbench_measures_the_raw_streams_and_a_fetch_of_several_files() {
    let bench = lanseed_tests::bin_named("lanseed-swarmbench", "LANSEED_SWARMBENCH_BIN");
    // 24 MiB: two files of incompressible bytes.
    let out = Command::new(&bench)
        .args(["--only", "throughput", "--runs", "1", "--mb", "24"])
        .output()
        .expect("run lanseed-swarmbench");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in [
        "raw receiver ",
        "raw sender ",
        "raw file sender ",
        "fetcher ",
        "seeder ",
    ] {
        let v = figure(&text, "run 0: CPU s/GB:", label);
        assert!(v > 0.0 && v.is_finite(), "{label}{v} in:\n{text}");
    }
    let raw = figure(&text, "run 0: raw stream", "raw stream ");
    let fetch = figure(&text, "run 0: raw stream", "lanseed fetch ");
    assert!(raw > 0.0 && fetch > 0.0, "{text}");
    // The commit's share, from the fetcher's "transfer done" (`commit_secs`):
    // some, and less than the whole fetch.
    let fetch_secs = figure(&text, "run 0: raw stream", "MB/s (");
    let commit_ms = figure(&text, "run 0: raw stream", "of which commit ");
    assert!(commit_ms > 0.0 && commit_ms < fetch_secs * 1e3, "{text}");
    let stolen = figure(&text, "run 0: raw stream", "stolen by the host: raw ");
    assert!((0.0..=100.0).contains(&stolen), "{text}");
    // The file sender read the same bytes the seeder serves: a figure of
    // its own, and the seeder shown against it.
    let vs_files = figure(&text, "median CPU s/GB of the raw stream", "seeder = ");
    assert!(vs_files > 0.0 && vs_files.is_finite(), "{text}");
    // What each process used outside its transfer is apart: some, and less
    // than a second (the fetcher's counts from its own log's `cpu_secs`).
    for label in ["raw receiver ", "raw sender ", "fetcher "] {
        let ms = figure(&text, "median CPU outside the transfer", label);
        assert!(ms > 0.0 && ms < 1000.0, "{label}{ms} ms in:\n{text}");
    }
}
