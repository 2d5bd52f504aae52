//! The config file through the real binary: a file's table reaches the
//! command it names, a flag and `LANSEED_<FLAG>` win over it, and a
//! mistake stops the command with the file, line and key. (The test
//! suite runs with `LANSEED_NO_CONFIG=1`, from `.cargo/config.toml`;
//! `--config` and `LANSEED_CONFIG` name a file explicitly and win.)

use std::path::Path;

use lanseed_tests::{generate_build, keygen, lanseed, pack_args, path_str, run_err, run_ok};

const APP: &str = "com.example.config";

fn packed_store(dir: &Path, name: &str, version: &str) -> std::path::PathBuf {
    let build = dir.join(format!("build-{name}"));
    generate_build(&build, 4, 10_000, 1);
    let store = dir.join(name);
    let keys = dir.join(format!("keys-{name}"));
    std::fs::create_dir_all(&keys).unwrap();
    let key = keygen(&keys);
    run_ok(&pack_args(&build, APP, version, &key, &store, &[]));
    store
}

fn versions(out: &std::process::Output) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_table_reaches_its_command_and_a_flag_or_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = packed_store(dir.path(), "from-file", "1.0.0");
    let from_flag = packed_store(dir.path(), "from-flag", "2.0.0");
    let from_env = packed_store(dir.path(), "from-env", "3.0.0");
    let cfg = dir.path().join("lanseed.toml");
    std::fs::write(
        &cfg,
        format!(
            "[releases]\nstore = \"{}\"\njson = true\n",
            path_str(&from_file)
        ),
    )
    .unwrap();
    let cfg = path_str(&cfg);

    // The file alone: its [releases] table gives --store and --json.
    let out = run_ok(&["releases", "--config", cfg]);
    assert_eq!(versions(&out), ["1.0.0"]);
    // The same file through LANSEED_CONFIG.
    let out = lanseed()
        .args(["releases"])
        .env("LANSEED_CONFIG", cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(versions(&out), ["1.0.0"]);
    // A flag wins over the file.
    let out = run_ok(&["releases", "--config", cfg, "--store", path_str(&from_flag)]);
    assert_eq!(versions(&out), ["2.0.0"]);
    // The environment variable wins over the file too.
    let out = lanseed()
        .args(["releases", "--config", cfg])
        .env("LANSEED_STORE", path_str(&from_env))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(versions(&out), ["3.0.0"]);
}

#[test]
fn config_check_prints_each_node_setting_and_where_it_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lanseed.toml");
    std::fs::write(
        &cfg,
        "[node]\nstore = \"/var/lib/lanseed\"\n\n[seed]\nmax-uploads = 3\nfollow = [\"com.a\", \"com.b/beta\"]\n",
    )
    .unwrap();
    let cfg_s = path_str(&cfg);
    let out = lanseed()
        .args(["config", "check", "--config", cfg_s])
        .env("LANSEED_REQUEST_TIMEOUT", "45s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let seed = text
        .split("\n[seed]\n")
        .nth(1)
        .unwrap()
        .split("\n[device]\n")
        .next()
        .unwrap();
    assert!(
        seed.contains(&format!("store = /var/lib/lanseed ({cfg_s}:2 [node])")),
        "{text}"
    );
    assert!(
        seed.contains(&format!("max-uploads = 3 ({cfg_s}:5 [seed])")),
        "{text}"
    );
    assert!(
        seed.contains(&format!("follow = com.a, com.b/beta ({cfg_s}:6 [seed])")),
        "{text}"
    );
    assert!(
        seed.contains("request-timeout = 45s (env LANSEED_REQUEST_TIMEOUT)"),
        "{text}"
    );
    assert!(seed.contains("no-mdns = false (default)"), "{text}");
    let device = text.split("\n[device]\n").nth(1).unwrap();
    assert!(
        device.contains("max-uploads = 8 (default)"),
        "[seed] is not [device]: {text}"
    );
    assert!(
        device.contains(&format!("store = /var/lib/lanseed ({cfg_s}:2 [node])")),
        "{text}"
    );
}

#[test]
fn unknown_keys_and_bad_values_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lanseed.toml");
    let cfg_s = path_str(&cfg);
    for (text, expected) in [
        (
            "[seed]\nmax-uploads = 2\n\nfolow = \"com.a\"\n",
            format!("error: {cfg_s}:4: unknown key `folow` in [seed]"),
        ),
        (
            "[device]\napply = \"sometimes\"\n",
            format!("error: {cfg_s}:2: bad value for `apply` in [device]"),
        ),
        (
            "[seed]\nno-mdns = \"yes\"\n",
            format!("error: {cfg_s}:2: bad value for `no-mdns` in [seed]: --no-mdns is a switch"),
        ),
        ("[seed\n", format!("error: {cfg_s}:1: not valid TOML")),
        (
            "[kiosk]\n",
            format!("error: {cfg_s}:1: [kiosk] is not a lanseed command"),
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        // Any command stops on a bad file, and so does the check.
        for args in [
            vec!["releases", "--config", cfg_s],
            vec!["config", "check", "--config", cfg_s],
        ] {
            let err = run_err(&args);
            assert!(err.starts_with(&expected), "{text:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
    }
    let err = run_err(&[
        "releases",
        "--config",
        path_str(&dir.path().join("missing.toml")),
    ]);
    assert!(err.contains("cannot read the config file"), "{err}");
}

/// The README's example config file passes `lanseed config check`.
#[test]
fn the_readme_example_config_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme
        .split("```toml\n# /etc/lanseed/lanseed.toml")
        .nth(1)
        .expect("the README shows an example config")
        .split("```")
        .next()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lanseed.toml");
    std::fs::write(&cfg, format!("#{block}")).unwrap();
    let out = run_ok(&["config", "check", "--config", path_str(&cfg)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("app = com.example.kiosk"), "{text}");
}
