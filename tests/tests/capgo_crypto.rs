//! Capgo encryption v2 against the real `@capgo/cli`: a key it made packs
//! a release with `lanseed pack --capgo-key` (or `lanseed capgo-encrypt`);
//! a second node that never saw the key fetches it over loopback; the
//! CLI's own `bundle decrypt` opens the encrypted zip taken from that
//! node's store and verifies the checksum, and lanseed's decryptor agrees.
//!
//! The CLI is installed, with the network, before the tests run (`.ci/run`:
//! `npm install --prefix /opt/lanseed-ci/capgo-cli @capgo/cli@8.68.1
//! @capgo/capacitor-updater@8.51.23`; `$LANSEED_CAPGO_CLI_DIR` names
//! another prefix). The tests themselves use no network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lanseed_protocol::capgo::{self, CapgoPublicKey};
use lanseed_tests::capgo as capgo_http;
use lanseed_tests::net::NodeProc;
use lanseed_tests::{json, keygen, path_str as s, run_err, run_ok, store_releases};

const APP: &str = "com.example.fixture";
const T: Duration = Duration::from_secs(30);
const CLI_VERSION: &str = "8.68.1";
const UPDATER_VERSION: &str = "8.51.23";

/// Where `npm install --prefix` put the CLI.
fn cli_prefix() -> PathBuf {
    std::env::var_os("LANSEED_CAPGO_CLI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/lanseed-ci/capgo-cli"))
}

fn cli_bin() -> PathBuf {
    let bin = cli_prefix().join("node_modules/.bin/capgo");
    assert!(
        bin.is_file(),
        "{} is missing: install the Capgo CLI first (as .ci/run does): npm install --prefix {} @capgo/cli@{CLI_VERSION} @capgo/capacitor-updater@{UPDATER_VERSION}",
        bin.display(),
        cli_prefix().display()
    );
    bin
}

fn fixture_zip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/capgo/fixture.zip")
}

/// A throwaway Capacitor project that the CLI takes for the app's: its
/// config, and a package.json naming updater 8.x (so the CLI picks the
/// hex "V3" checksum that plugin reads).
fn project(dir: &Path) -> PathBuf {
    let p = dir.join("app");
    std::fs::create_dir_all(p.join("dist")).unwrap();
    std::fs::write(p.join("dist/index.html"), "<!doctype html>").unwrap();
    std::fs::write(
        p.join("capacitor.config.json"),
        format!(r#"{{"appId":"{APP}","appName":"Fixture","webDir":"dist"}}"#),
    )
    .unwrap();
    std::fs::write(
        p.join("package.json"),
        format!(
            r#"{{"name":"fixture","version":"1.0.0","dependencies":{{"@capgo/capacitor-updater":"{UPDATER_VERSION}"}}}}"#
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(cli_prefix().join("node_modules"), p.join("node_modules")).unwrap();
    p
}

/// Runs the CLI in `project` (no prompts: CI mode, no stdin).
fn capgo_cli(project: &Path, args: &[&str]) -> Output {
    Command::new(cli_bin())
        .args(args)
        .current_dir(project)
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .env("DO_NOT_TRACK", "1")
        .stdin(Stdio::null())
        .output()
        .expect("spawn the Capgo CLI")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `npx @capgo/cli key create` in `project`: the private key file.
fn cli_key(project: &Path) -> PathBuf {
    let out = capgo_cli(project, &["key", "create"]);
    let key = project.join(".capgo_key_v2");
    assert!(key.is_file(), "key create wrote no key: {}", text(&out));
    let private = std::fs::read_to_string(&key).unwrap();
    assert!(private.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    key
}

/// The CLI's `bundle decrypt` of `enc` with the public key and
/// `session_key`, checking `checksum`: the decrypted zip, or the output
/// when it refused.
fn cli_decrypt(
    project: &Path,
    enc: &Path,
    session_key: &str,
    checksum: &str,
) -> Result<Vec<u8>, String> {
    let out = capgo_cli(
        project,
        &[
            "bundle",
            "decrypt",
            s(enc),
            session_key,
            "--key",
            ".capgo_key_v2.pub",
            "--checksum",
            checksum,
        ],
    );
    let said = text(&out);
    if !out.status.success() {
        return Err(said);
    }
    assert!(said.contains("Checksum matches"), "{said}");
    assert!(said.contains("V3"), "the CLI took the 8.x checksum: {said}");
    let decrypted = PathBuf::from(format!("{}_decrypted.zip", enc.display()));
    let zip = std::fs::read(&decrypted).unwrap();
    std::fs::remove_file(&decrypted).unwrap();
    Ok(zip)
}

/// `lanseed export --capgo` from `store`: the encrypted zip's path and
/// the release view printed.
fn export_capgo(store: &Path, out: &Path) -> serde_json::Value {
    json(&run_ok(&[
        "export",
        APP,
        "production",
        "--capgo",
        "--out",
        s(out),
        "--store",
        s(store),
        "--json",
    ]))
}

fn listen_addr(node: &NodeProc) -> String {
    let line = node.wait_log("listening address=", T);
    let addr = line.split("address=").nth(1).unwrap().trim().to_owned();
    let started = node.wait_log("node started", T);
    let id = started.split("peer_id=").nth(1).unwrap();
    format!("{addr}/p2p/{}", id.split_whitespace().next().unwrap())
}

/// Every file under `dir`, read.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn a_node_without_the_key_carries_what_the_capgo_cli_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let project = project(dir.path());
    let capgo_key = cli_key(&project);
    let public_pem = std::fs::read_to_string(project.join(".capgo_key_v2.pub")).unwrap();
    let public = CapgoPublicKey::from_pem(&public_pem).unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());

    // The publisher packs the zip the real `@capgo/cli bundle zip` made.
    let a = dir.path().join("a");
    let packed = json(&run_ok(&[
        "pack",
        s(&fixture_zip()),
        "--app",
        APP,
        "--version",
        "1.0.0",
        "--key",
        s(&key),
        "--store",
        s(&a),
        "--capgo-key",
        s(&capgo_key),
        "--json",
    ]));
    let section = &packed["capgo"];
    assert_eq!(section["key_id"], capgo::key_id(&public_pem));
    assert_eq!(section["key_id"].as_str().unwrap().len(), 20);

    // A second node, which never saw the key, fetches it over loopback
    // and serves it through its Capgo gateway.
    let seeder = NodeProc::start_here("seed", &a, &["--no-mdns"]);
    let b = dir.path().join("b");
    let port = lanseed_tests::free_port();
    let http = format!("127.0.0.1:{port}");
    let follower = NodeProc::start_here(
        "seed",
        &b,
        &[
            "--no-mdns",
            "--follow",
            APP,
            "--trust",
            &trust,
            "--peer",
            &listen_addr(&seeder),
            "--http",
            &http,
        ],
    );
    follower.wait_log(
        "transfer done app=com.example.fixture channel=production version=1.0.0",
        T,
    );
    let held = store_releases(&b);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["release_id"], packed["release_id"]);
    assert_eq!(held[0]["capgo"], packed["capgo"]);
    let log = follower.log_text();
    assert!(
        log.contains("its release needs its Capgo payload too"),
        "the payload came as a second transfer: {log}"
    );
    run_ok(&["store", "verify", "--store", s(&b), "--trust", &trust]);
    for (path, bytes) in files_under(&b) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key",
            path.display()
        );
    }

    // The second node's gateway, asked as the plugin of an app with this
    // public key asks (`key_id` in the body), offers the encrypted zip with
    // the publisher's session key and checksum; the real CLI decrypts the
    // zip it serves, and the checksum verifies.
    let mut body = capgo_http::info(APP, &capgo_http::device_id(1), "builtin");
    body["key_id"] = serde_json::json!(capgo::key_id(&public_pem));
    let offer = lanseed_tests::wait_for("the gateway's offer", T, || {
        let r = capgo_http::post(port, "/updates", &body);
        let v = r.json();
        v.get("url").is_some().then_some(v)
    });
    let served_session_key = offer["session_key"].as_str().expect("a session key");
    let served_checksum = offer["checksum"].as_str().unwrap();
    let download = capgo_http::get_link(port, offer["url"].as_str().unwrap(), &[]);
    assert_eq!(download.status, 200);
    let served_zip = dir.path().join("served.zip");
    std::fs::write(&served_zip, &download.body).unwrap();
    let from_gateway = cli_decrypt(&project, &served_zip, served_session_key, served_checksum)
        .expect("the CLI decrypts the zip the gateway served");
    assert_eq!(
        capgo::open(&public, served_session_key, served_checksum, &download.body).unwrap(),
        from_gateway,
        "our decryptor agrees"
    );
    // The app without a public key gets the plain zip, its SHA-256 as checksum.
    let plain_body = capgo_http::info(APP, &capgo_http::device_id(2), "builtin");
    let plain_offer = capgo_http::post(port, "/updates", &plain_body).json();
    assert!(
        plain_offer.get("session_key").is_none_or(|v| v.is_null()),
        "{plain_offer}"
    );
    let plain_zip = capgo_http::get_link(port, plain_offer["url"].as_str().unwrap(), &[]).body;
    assert_eq!(
        capgo_http::sha256_hex(&plain_zip),
        plain_offer["checksum"].as_str().unwrap()
    );
    assert_eq!(plain_zip, from_gateway, "the same zip, decrypted");
    // An app with another key is refused.
    let mut other = capgo_http::info(APP, &capgo_http::device_id(3), "builtin");
    other["key_id"] = serde_json::json!("MIIBCgKCAQEAnotthis0");
    let refused = capgo_http::post(port, "/updates", &other).json();
    assert_eq!(refused["error"], "key_id_mismatch", "{refused}");

    // The CLI decrypts the encrypted zip from the second node's store and
    // the checksum verifies; it is the bundle's own zip.
    let enc = dir.path().join("from-b.zip");
    let exported = export_capgo(&b, &enc);
    let session_key = exported["capgo"]["session_key"].as_str().unwrap();
    let checksum = exported["capgo"]["checksum"].as_str().unwrap();
    let zip = cli_decrypt(&project, &enc, session_key, checksum).expect("the CLI decrypts");
    let plain = dir.path().join("plain.zip");
    let plain_view = json(&run_ok(&[
        "export",
        APP,
        "production",
        "--zip",
        "--out",
        s(&plain),
        "--store",
        s(&b),
        "--json",
    ]));
    assert_eq!(zip, std::fs::read(&plain).unwrap());
    assert_eq!(
        plain_view["sha256"].as_str().unwrap(),
        capgo::decrypt_checksum(&public, checksum).unwrap()
    );
    // lanseed's decryptor, written from the plugin, agrees.
    let ours = capgo::open(
        &public,
        session_key,
        checksum,
        &std::fs::read(&enc).unwrap(),
    );
    assert_eq!(ours.unwrap(), zip);
    // Packed again, the decrypted zip is the same bundle.
    let again = json(&run_ok(&[
        "pack",
        s(&plain),
        "--app",
        APP,
        "--version",
        "1.0.1",
        "--key",
        s(&key),
        "--store",
        s(&dir.path().join("again")),
        "--json",
    ]));
    assert_eq!(again["bundle_id"], packed["bundle_id"]);

    // Artefacts added later to a release the second node already holds:
    // it fetches only the payload.
    run_ok(&[
        "pack",
        s(&project.join("dist")),
        "--app",
        APP,
        "--version",
        "2.0.0",
        "--key",
        s(&key),
        "--store",
        s(&a),
    ]);
    follower.wait_log(
        "transfer done app=com.example.fixture channel=production version=2.0.0",
        T,
    );
    let resigned = json(&run_ok(&[
        "capgo-encrypt",
        APP,
        "2.0.0",
        "--capgo-key",
        s(&capgo_key),
        "--key",
        s(&key),
        "--store",
        s(&a),
        "--json",
    ]));
    let payload = resigned["capgo"]["bundle_id"].as_str().unwrap();
    let fetching = follower.wait_log(&format!("bundle={payload}"), T);
    assert!(fetching.contains("fetching release"), "{fetching}");
    lanseed_tests::wait_for("the re-signed release in the second store", T, || {
        store_releases(&b)
            .iter()
            .any(|r| r["release_id"] == resigned["release_id"])
            .then_some(())
    });
    let enc2 = dir.path().join("from-b-2.zip");
    let exported = export_capgo(&b, &enc2);
    assert_eq!(exported["release_id"], resigned["release_id"]);
    cli_decrypt(
        &project,
        &enc2,
        exported["capgo"]["session_key"].as_str().unwrap(),
        exported["capgo"]["checksum"].as_str().unwrap(),
    )
    .expect("the CLI decrypts the re-signed release's zip");

    // A checksum of other bytes is refused by the CLI and by us.
    let mut bad = hex_decode(checksum);
    bad[7] ^= 1;
    let bad = hex_encode(&bad);
    assert!(cli_decrypt(&project, &enc, session_key, &bad).is_err());
    assert!(capgo::open(&public, session_key, &bad, &std::fs::read(&enc).unwrap()).is_err());
}

#[test]
fn capgo_encrypt_re_signs_a_packed_release_that_the_cli_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let project = project(dir.path());
    let capgo_key = cli_key(&project);
    let key = keygen(dir.path());
    let store = dir.path().join("s");
    let pack = |version: &str| {
        json(&run_ok(&[
            "pack",
            s(&project.join("dist")),
            "--app",
            APP,
            "--version",
            version,
            "--key",
            s(&key),
            "--store",
            s(&store),
            "--json",
        ]))
    };
    let plain = pack("1.0.0");
    assert!(plain.get("capgo").is_none());
    let encrypt = |version: &str, capgo_key: &Path| {
        vec![
            "capgo-encrypt".to_owned(),
            APP.to_owned(),
            version.to_owned(),
            "--capgo-key".to_owned(),
            s(capgo_key).to_owned(),
            "--key".to_owned(),
            s(&key).to_owned(),
            "--store".to_owned(),
            s(&store).to_owned(),
            "--json".to_owned(),
        ]
    };

    // The public key, or a version that is not the newest: one sentence
    // that says what to do.
    let err = run_err(&encrypt("1.0.0", &project.join(".capgo_key_v2.pub")));
    assert!(err.contains("pass the private key"), "{err}");
    let err = run_err(&encrypt("9.9.9", &capgo_key));
    assert!(
        err.contains("has no release of com.example.fixture 9.9.9"),
        "{err}"
    );

    let signed = json(&run_ok(&encrypt("1.0.0", &capgo_key)));
    assert_eq!(signed["bundle_id"], plain["bundle_id"]);
    assert!(signed["seq"].as_u64() > plain["seq"].as_u64());
    assert_ne!(signed["release_id"], plain["release_id"]);
    let enc = dir.path().join("enc.zip");
    let exported = export_capgo(&store, &enc);
    assert_eq!(exported["release_id"], signed["release_id"]);
    let zip = cli_decrypt(
        &project,
        &enc,
        exported["capgo"]["session_key"].as_str().unwrap(),
        exported["capgo"]["checksum"].as_str().unwrap(),
    )
    .expect("the CLI decrypts");
    let plain_zip = dir.path().join("plain.zip");
    run_ok(&[
        "export",
        APP,
        "production",
        "--zip",
        "--out",
        s(&plain_zip),
        "--store",
        s(&store),
    ]);
    assert_eq!(zip, std::fs::read(&plain_zip).unwrap());

    let listed = String::from_utf8(run_ok(&["releases", "--store", s(&store)]).stdout).unwrap();
    let key_id = signed["capgo"]["key_id"].as_str().unwrap();
    assert_eq!(
        listed.matches(&format!("capgo key {key_id}")).count(),
        1,
        "{listed}"
    );

    // Once 1.1.0 is out, 1.0.0 can no longer be re-signed.
    pack("1.1.0");
    let err = run_err(&encrypt("1.0.0", &capgo_key));
    assert!(err.contains("is not the newest release"), "{err}");
}

#[test]
fn a_release_re_signed_while_its_bundle_is_fetched_brings_its_payload_after() {
    let dir = tempfile::tempdir().unwrap();
    let project = project(dir.path());
    let capgo_key = cli_key(&project);
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    lanseed_tests::generate_build(&build, 20, 4 << 20, 9);
    let a = dir.path().join("a");
    let plain = json(&run_ok(&[
        "pack",
        s(&build),
        "--app",
        APP,
        "--version",
        "1.0.0",
        "--key",
        s(&key),
        "--store",
        s(&a),
        "--json",
    ]));
    let main = plain["bundle_id"].as_str().unwrap().to_owned();
    // A slow seeder, so that the re-signed release arrives mid-transfer.
    let seeder = NodeProc::start_here("seed", &a, &["--no-mdns", "--upload-limit", "1M"]);
    let b = dir.path().join("b");
    let follower = NodeProc::start_here(
        "seed",
        &b,
        &[
            "--no-mdns",
            "--follow",
            APP,
            "--trust",
            &trust,
            "--peer",
            &listen_addr(&seeder),
        ],
    );
    follower.wait_log(&format!("bundle={main}"), T);
    let resigned = json(&run_ok(&[
        "capgo-encrypt",
        APP,
        "1.0.0",
        "--capgo-key",
        s(&capgo_key),
        "--key",
        s(&key),
        "--store",
        s(&a),
        "--json",
    ]));
    assert!(
        !follower.log_text().contains("transfer done"),
        "the bundle was still being fetched when the re-signed release came"
    );
    lanseed_tests::wait_for("the re-signed release in the second store", T, || {
        store_releases(&b)
            .iter()
            .any(|r| r["release_id"] == resigned["release_id"])
            .then_some(())
    });
    let log = follower.log_text();
    let fetches_of = |bundle: &str| {
        log.lines()
            .filter(|l| l.contains("fetching release") && l.contains(&format!("bundle={bundle}")))
            .count()
    };
    assert_eq!(fetches_of(&main), 1, "{log}");
    assert_eq!(
        fetches_of(resigned["capgo"]["bundle_id"].as_str().unwrap()),
        1,
        "{log}"
    );
    run_ok(&["store", "verify", "--store", s(&b), "--trust", &trust]);
    let enc = dir.path().join("enc.zip");
    let exported = export_capgo(&b, &enc);
    cli_decrypt(
        &project,
        &enc,
        exported["capgo"]["session_key"].as_str().unwrap(),
        exported["capgo"]["checksum"].as_str().unwrap(),
    )
    .expect("the CLI decrypts");
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
