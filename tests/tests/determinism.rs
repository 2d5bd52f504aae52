//! The same folder gives the same bundle id, whatever the files' times,
//! permissions or creation order.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use lanseed_protocol::pack::manifest_of_dir;
use lanseed_tests::{generate_build, json, keygen, run_ok};

/// Copies every file of `from` to `to` in the given order, with the given
/// modification time and mode.
fn copy_in_order(
    from: &Path,
    to: &Path,
    files: &[std::path::PathBuf],
    mtime: SystemTime,
    mode: u32,
) {
    for rel in files {
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from.join(rel), &dest).unwrap();
        let f = std::fs::File::options().write(true).open(&dest).unwrap();
        f.set_modified(mtime).unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn list(dir: &Path, base: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            list(&p, base, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().to_owned());
        }
    }
}

#[test]
fn same_folder_same_bundle_id() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    generate_build(&original, 120, 3 << 20, 11);
    let mut files = Vec::new();
    list(&original, &original, &mut files);
    files.sort();

    let a = dir.path().join("a");
    let b = dir.path().join("b");
    copy_in_order(
        &original,
        &a,
        &files,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        0o644,
    );
    files.reverse();
    copy_in_order(&original, &b, &files, SystemTime::now(), 0o600);

    let none = |_| {};
    let ma = manifest_of_dir(&a, &none).unwrap();
    let mb = manifest_of_dir(&b, &none).unwrap();
    assert_eq!(ma.files().len(), 120);
    assert_eq!(ma.id(), mb.id());

    // The same through the command line, into two separate stores.
    let key = keygen(dir.path());
    let id = |src: &Path, store: &str| {
        let out = run_ok(&[
            "pack",
            src.to_str().unwrap(),
            "--app",
            "com.example.app",
            "--version",
            "1.0.0",
            "--key",
            key.to_str().unwrap(),
            "--store",
            dir.path().join(store).to_str().unwrap(),
            "--json",
        ]);
        json(&out)["bundle_id"].as_str().unwrap().to_owned()
    };
    let (ia, ib) = (id(&a, "sa"), id(&b, "sb"));
    assert_eq!(ia, ib);
    assert_eq!(ia, ma.id().to_string());

    // One changed byte changes the id.
    let victim = b.join(&files[0]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes.push(b'!');
    std::fs::write(&victim, bytes).unwrap();
    assert_ne!(manifest_of_dir(&b, &none).unwrap().id(), ma.id());
}
