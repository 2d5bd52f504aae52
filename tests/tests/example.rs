//! The example app the README packs stays a valid bundle.

use std::path::Path;

use lanseed_tests::{json, keygen, run_ok};

#[test]
fn example_app_packs_and_verifies() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-kiosk");
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let store = dir.path().join("store");
    let out = run_ok(&[
        "pack",
        example.to_str().unwrap(),
        "--app",
        "com.example.hello",
        "--version",
        "1.0.0",
        "--key",
        key.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(json(&out)["files"], 3);
    let trust = format!("{}.pub", key.display());
    run_ok(&[
        "store",
        "verify",
        "--store",
        store.to_str().unwrap(),
        "--trust",
        &trust,
    ]);
}
