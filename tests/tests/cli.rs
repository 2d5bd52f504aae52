//! The command line's contract: keygen files, pack and releases output,
//! clear errors, verify and gc.

use std::path::Path;

use lanseed_tests::{json, keygen, pack_args, run_err, run_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn small_build(dir: &Path, marker: &str) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), format!("<h1>{marker}</h1>")).unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log('shared')").unwrap();
}

#[test]
fn keygen_writes_private_secret_and_public_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let out = run_ok(&["keygen", "--out", s(&key)]);
    let printed = String::from_utf8(out.stdout).unwrap();
    let line = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    assert_eq!(printed.trim(), line.trim());
    assert!(line.starts_with("lanseed-pub-ed25519:"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let before = std::fs::read(&key).unwrap();
    let err = run_err(&["keygen", "--out", s(&key)]);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "refusal changed nothing"
    );
    run_ok(&["keygen", "--out", s(&key), "--force"]);
    assert_ne!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn pack_prints_release_json_and_releases_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let build = dir.path().join("dist");
    small_build(&build, "v1");
    let store = dir.path().join("store");
    let out = run_ok(&pack_args(
        &build,
        "com.example.app",
        "1.0.0",
        &key,
        &store,
        &[
            "--json",
            "--seq",
            "7",
            "--rollout",
            "12.5",
            "--notes",
            "first",
        ],
    ));
    let r = json(&out);
    assert_eq!(r["app"], "com.example.app");
    assert_eq!(r["channel"], "production");
    assert_eq!(r["version"], "1.0.0");
    assert_eq!(r["seq"], 7);
    assert_eq!(r["rollout_percent"], 12.5);
    assert_eq!(r["notes"], "first");
    assert_eq!(r["files"], 2);
    assert_eq!(r["bundle_id"].as_str().unwrap().len(), 64);

    // Default sequence: max(highest + 1, now) — here `now` wins.
    small_build(&build, "v2");
    let out = run_ok(&[
        "pack",
        s(&build),
        "--app",
        "com.example.app",
        "--version",
        "1.1.0",
        "--channel",
        "beta",
        "--key",
        s(&key),
        "--store",
        s(&store),
        "--json",
    ]);
    let r2 = json(&out);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(r2["seq"].as_u64().unwrap() + 60 > now);
    // An explicit sequence far in the future, then the default goes past it.
    let far = (now + 1_000_000).to_string();
    run_ok(&[
        "pack",
        s(&build),
        "--app",
        "com.example.app",
        "--version",
        "1.1.1",
        "--channel",
        "beta",
        "--key",
        s(&key),
        "--store",
        s(&store),
        "--seq",
        &far,
    ]);
    let out = run_ok(&[
        "pack",
        s(&build),
        "--app",
        "com.example.app",
        "--version",
        "1.1.2",
        "--channel",
        "beta",
        "--key",
        s(&key),
        "--store",
        s(&store),
        "--json",
    ]);
    assert_eq!(json(&out)["seq"].as_u64().unwrap(), now + 1_000_001);

    let list = json(&run_ok(&["releases", "--store", s(&store), "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    for key in ["app", "channel", "version", "seq", "bundle_id"] {
        assert!(list.iter().all(|r| !r[key].is_null()), "{key} missing");
    }
    // Sorted by app, channel, then sequence.
    let order: Vec<&str> = list
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["1.1.0", "1.1.1", "1.1.2", "1.0.0"]);
    let beta = json(&run_ok(&[
        "releases",
        "--store",
        s(&store),
        "--json",
        "--channel",
        "beta",
    ]));
    assert_eq!(beta.as_array().unwrap().len(), 3);

    // Both bundles share assets/app.js: it is stored once.
    let report = json(&run_ok(&[
        "store",
        "verify",
        "--store",
        s(&store),
        "--json",
    ]));
    assert_eq!(report["ok"], true);
    assert_eq!(report["blobs"], 3);
    assert_eq!(report["manifests"], 2);
}

#[test]
fn clear_errors_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let build = dir.path().join("dist");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("main.js"), "x").unwrap();
    let store = dir.path().join("store");
    let pack = |extra: &[&str]| {
        let mut args = vec!["pack", s(&build), "--key", s(&key), "--store", s(&store)];
        args.extend_from_slice(extra);
        run_err(&args)
    };
    let ok_args = ["--app", "com.example.app", "--version", "1.0.0"];
    let err = pack(&ok_args);
    assert!(err.contains("no index.html"), "{err}");
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    assert!(!err.contains("panicked"));
    assert!(!store.join("index").exists(), "nothing committed");
    assert!(!store.exists(), "not even a store was made");

    std::fs::write(build.join("index.html"), "hi").unwrap();
    let err = pack(&["--app", "example", "--version", "1.0.0"]);
    assert!(err.contains("not an app id"), "{err}");
    let err = pack(&["--app", "com.example.app", "--version", "one"]);
    assert!(err.contains("not a semantic version"), "{err}");
    let err = pack(&[
        "--app",
        "com.example.app",
        "--version",
        "1.0.0",
        "--rollout",
        "150",
    ]);
    assert!(err.contains("percentage"), "{err}");
    let err = run_err(&[
        "pack",
        s(&build),
        "--app",
        "com.example.app",
        "--version",
        "1.0.0",
        "--key",
        s(&build.join("index.html")),
        "--store",
        s(&store),
    ]);
    assert!(err.contains("not a lanseed secret key file"), "{err}");

    let err = run_err(&["releases", "--store", s(dir.path())]);
    assert!(err.contains("is not a lanseed store"), "{err}");

    run_ok(&[
        "pack",
        s(&build),
        "--key",
        s(&key),
        "--store",
        s(&store),
        "--seq",
        "5",
        "--app",
        "com.example.app",
        "--version",
        "1.0.0",
    ]);
    std::fs::write(build.join("index.html"), "changed").unwrap();
    let err = pack(&[
        "--app",
        "com.example.app",
        "--version",
        "1.0.1",
        "--seq",
        "5",
    ]);
    assert!(err.contains("sequence 5"), "{err}");
    let list = json(&run_ok(&["releases", "--store", s(&store), "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn verify_finds_damage_and_gc_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let build = dir.path().join("dist");
    let store = dir.path().join("store");
    for v in 1..=5 {
        small_build(&build, &format!("v{v}"));
        run_ok(&pack_args(
            &build,
            "com.example.app",
            &format!("1.0.{v}"),
            &key,
            &store,
            &["--seq", &v.to_string()],
        ));
    }
    let report = json(&run_ok(&[
        "store",
        "verify",
        "--store",
        s(&store),
        "--json",
    ]));
    assert_eq!(report["blobs"], 6);

    // Only the key of this test is trusted; another key's trust file fails.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let other_key = keygen(&other);
    let other_pub = format!("{}.pub", other_key.display());
    let err = run_err(&[
        "store",
        "verify",
        "--store",
        s(&store),
        "--trust",
        &other_pub,
    ]);
    assert!(err.contains("problem"), "{err}");
    let own_pub = format!("{}.pub", key.display());
    run_ok(&["store", "verify", "--store", s(&store), "--trust", &own_pub]);

    // Pieces of a fetch that is not running are leftovers to gc.
    let partial = store.join("partial").join("ab".repeat(32));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("manifest"), b"x").unwrap();
    let gc = json(&run_ok(&[
        "store",
        "gc",
        "--store",
        s(&store),
        "--keep",
        "2",
        "--json",
    ]));
    assert!(!partial.exists());
    assert!(gc["leftovers_removed"].as_u64().unwrap() >= 1, "{gc}");
    assert_eq!(gc["kept"], 2);
    assert_eq!(gc["dropped"].as_array().unwrap().len(), 3);
    assert_eq!(gc["blobs_removed"], 3, "three old index.html versions");
    let list = json(&run_ok(&["releases", "--store", s(&store), "--json"]));
    let seqs: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![4, 5]);
    run_ok(&["store", "verify", "--store", s(&store)]);

    // Flip one byte of one blob: verify names the blob and fails.
    let blobs = store.join("blobs");
    let sub = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let blob = std::fs::read_dir(&sub)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let out = lanseed_tests::lanseed()
        .args(["store", "verify", "--store", s(&store)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("does not match its hash"), "{stdout}");

    // A truncated index is a clear error, not a shorter list.
    let index = store.join("index");
    let bytes = std::fs::read(&index).unwrap();
    std::fs::write(&index, &bytes[..bytes.len() - 10]).unwrap();
    let err = run_err(&["releases", "--store", s(&store)]);
    assert!(err.contains("damaged"), "{err}");
}

/// Every file and folder under `root`: path, size and modification time.
fn snapshot(root: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), meta.len(), meta.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// A store with five releases of one app (seq 1..=5) in `dir`.
fn five_releases(dir: &Path) -> std::path::PathBuf {
    let key = keygen(dir);
    let build = dir.join("dist");
    let store = dir.join("store");
    for v in 1..=5 {
        small_build(&build, &format!("v{v}"));
        run_ok(&pack_args(
            &build,
            "com.example.app",
            &format!("1.0.{v}"),
            &key,
            &store,
            &["--seq", &v.to_string()],
        ));
    }
    store
}

#[test]
fn gc_dry_run_changes_no_file_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = five_releases(dir.path());
    let partial = store.join("partial").join("ab".repeat(32));
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("manifest"), b"x").unwrap();
    std::fs::write(partial.join("blob"), [0u8; 1000]).unwrap();
    std::fs::write(store.join("tmp").join("staged.tmp"), b"left").unwrap();
    let before = snapshot(&store);

    let gc = json(&run_ok(&[
        "store",
        "gc",
        "--store",
        s(&store),
        "--keep",
        "1",
        "--dry-run",
        "--json",
    ]));

    assert_eq!(snapshot(&store), before, "a dry run changed the store");
    assert_eq!(gc["dry_run"], true);
    assert_eq!(gc["kept"], 1);
    assert_eq!(gc["dropped"].as_array().unwrap().len(), 4, "{gc}");
    assert_eq!(
        gc["leftovers_removed"], 2,
        "the partial folder and tmp/: {gc}"
    );
    assert!(gc["bytes_freed"].as_u64().unwrap() >= 1000, "{gc}");
    // The same run for real removes what the dry run counted.
    let real = json(&run_ok(&[
        "store",
        "gc",
        "--store",
        s(&store),
        "--keep",
        "1",
        "--json",
    ]));
    for field in [
        "kept",
        "manifests_removed",
        "blobs_removed",
        "leftovers_removed",
    ] {
        assert_eq!(real[field], gc[field], "{field}");
    }
    assert!(!partial.exists());
}

#[test]
fn gc_keep_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = five_releases(dir.path());
    let before = snapshot(&store);
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["store", "gc", "--store", s(&store), "--keep", "0"];
        args.extend_from_slice(extra);
        let err = run_err(&args);
        assert!(err.contains("--keep"), "{err}");
        assert!(err.contains("0"), "{err}");
    }
    assert_eq!(snapshot(&store), before);
    let list = json(&run_ok(&["releases", "--store", s(&store), "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 5);
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &["keygen"][..],
        &["pack"],
        &["releases"],
        &["store", "verify"],
        &["store", "gc"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = run_ok(&args);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn duplicate_and_empty_files_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let build = dir.path().join("dist");
    small_build(&build, "dups");
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(build.join(d)).unwrap();
        std::fs::write(build.join(d).join(".keep"), "").unwrap();
        std::fs::write(build.join(d).join("logo.png"), vec![9u8; 5000]).unwrap();
    }
    std::fs::write(build.join("big-1.bin"), vec![1u8; 5 << 20]).unwrap();
    std::fs::write(build.join("big-2.bin"), vec![1u8; 5 << 20]).unwrap();
    std::os::unix::fs::symlink("assets/app.js", build.join("alias.js")).unwrap();
    let store = dir.path().join("store");
    let pack = |extra: &[&str]| {
        let mut args = vec![
            "pack",
            s(&build),
            "--app",
            "com.example.app",
            "--version",
            "1.0.0",
            "--key",
            s(&key),
            "--store",
            s(&store),
            "--json",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let args = pack(&[]);
    let out = run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(json(&out)["files"], 11);
    let report = json(&run_ok(&[
        "store",
        "verify",
        "--store",
        s(&store),
        "--json",
    ]));
    assert_eq!(report["ok"], true);
    // index, app.js (= alias.js), empty, logo, big: five distinct blobs.
    assert_eq!(report["blobs"], 5);

    // Running the same pack again (same sequence) finds it already there.
    let args = pack(&["--seq", "77"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(&args);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(json(&run_ok(&args))["already_present"], true);

    // A link out of the build, and a broken one, are refused.
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, "private").unwrap();
    std::os::unix::fs::symlink(&outside, build.join("leak.txt")).unwrap();
    let err = run_err(&pack(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("outside the build folder"), "{err}");
    std::fs::remove_file(build.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere"), build.join("dangling.js")).unwrap();
    let err = run_err(&pack(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("broken symlink"), "{err}");

    // A missing source creates no store.
    let fresh = dir.path().join("fresh");
    let err = run_err(&[
        "pack",
        s(&dir.path().join("nothere")),
        "--app",
        "com.example.app",
        "--version",
        "1.0.0",
        "--key",
        s(&key),
        "--store",
        s(&fresh),
    ]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!fresh.exists());
}

#[test]
fn rollout_signs_a_new_share_and_goes_back_to_an_older_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let store = dir.path().join("store");
    let app = "com.example.rollout";
    let mut bundles = Vec::new();
    for v in ["1.0.0", "2.0.0"] {
        let build = dir.path().join(v);
        small_build(&build, v);
        let out = run_ok(&pack_args(&build, app, v, &key, &store, &["--json"]));
        bundles.push(json(&out));
    }
    let rollout = |extra: &[&str]| {
        let mut args = vec![
            "rollout",
            app,
            "production",
            "--key",
            s(&key),
            "--store",
            s(&store),
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&run_ok(&args))
    };
    let r = rollout(&["--percent", "25"]);
    assert_eq!(r["bundle_id"], bundles[1]["bundle_id"]);
    assert_eq!(r["version"], "2.0.0");
    assert_eq!(r["rollout_percent"], 25.0);
    assert!(r["seq"].as_u64() > bundles[1]["seq"].as_u64());
    let paused = rollout(&["--percent", "0"]);
    assert_eq!(paused["rollout_percent"], 0.0);
    assert!(paused["seq"].as_u64() > r["seq"].as_u64());
    let back = rollout(&["--back-to", "1.0.0"]);
    assert_eq!(back["bundle_id"], bundles[0]["bundle_id"]);
    assert_eq!(back["version"], "1.0.0");
    assert_eq!(back["rollout_percent"], 100.0);
    assert!(back["seq"].as_u64() > paused["seq"].as_u64());
    // `releases` lists every statement, newest last.
    let all = json(&run_ok(&["releases", "--store", s(&store), "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 5);

    let base = [
        "rollout",
        app,
        "production",
        "--key",
        s(&key),
        "--store",
        s(&store),
    ];
    let err = run_err(&[&base[..], &["--back-to", "1.0.0"]].concat());
    assert!(err.contains("already points at 1.0.0's bundle"), "{err}");
    let err = run_err(&[&base[..], &["--back-to", "0.1.0"]].concat());
    assert!(err.contains("no release 0.1.0"), "{err}");
    let err = run_err(&[&base[..]].concat());
    assert!(
        err.contains("--percent") && err.contains("--back-to"),
        "{err}"
    );
    let err = run_err(&[&base[..], &["--percent", "101"]].concat());
    assert!(err.contains("101"), "{err}");
    let err = run_err(&[
        "rollout",
        app,
        "beta",
        "--key",
        s(&key),
        "--store",
        s(&store),
        "--percent",
        "5",
    ]);
    assert!(
        err.contains("no release of com.example.rollout on channel beta"),
        "{err}"
    );
}
