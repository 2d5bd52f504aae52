//! Zips in and out: the hostile corpus, the real Capgo CLI zip, the
//! deterministic bundle zip, release files across stores, and the static
//! origin tree served over HTTP.

use std::path::{Path, PathBuf};

use lanseed_protocol::{Hash, Manifest};
use lanseed_tests::zipcraft::{Craft, craft_zip};
use lanseed_tests::{http_get, json, keygen, listing, pack_args, run_err, run_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const INDEX: &[u8] = b"<!doctype html><h1>ok</h1>";

/// A store holding one release, to check that refusals change nothing.
fn seeded_store(dir: &Path, key: &Path) -> PathBuf {
    let build = dir.join("seed-build");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("index.html"), "seed").unwrap();
    let store = dir.join("store");
    run_ok(&[
        "pack",
        s(&build),
        "--app",
        "com.example.app",
        "--version",
        "1.0.0",
        "--key",
        s(key),
        "--store",
        s(&store),
    ]);
    store
}

/// A hostile case: its name, its entries, extra flags, the text its error
/// must hold and the entry it must name.
type Case = (
    &'static str,
    Vec<Craft>,
    Vec<&'static str>,
    &'static str,
    &'static str,
);

#[test]
fn hostile_zips_are_refused_each_with_its_own_error_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let store = seeded_store(dir.path(), &key);
    let before = listing(&store);
    let index = || Craft::file("index.html", INDEX);
    let zeros = |n: usize| vec![0u8; n];
    let named = |name: &[u8], data: &[u8]| Craft {
        name: name.to_vec(),
        data: data.to_vec(),
        ..Craft::default()
    };
    // (case, entries, extra CLI flags, expected text, entry the error names)
    let cases: Vec<Case> = vec![
        (
            "absolute path",
            vec![index(), Craft::file("/etc/passwd", b"x")],
            vec![],
            "absolute",
            "/etc/passwd",
        ),
        (
            "drive letter",
            vec![index(), Craft::file("C:/evil.js", b"x")],
            vec![],
            "absolute",
            "C:/evil.js",
        ),
        (
            "dot-dot",
            vec![index(), Craft::file("../evil.js", b"x")],
            vec![],
            "climbs out",
            "../evil.js",
        ),
        (
            "inner dot-dot",
            vec![index(), Craft::file("a/../../evil.js", b"x")],
            vec![],
            "climbs out",
            "a/../../evil.js",
        ),
        (
            "backslash",
            vec![index(), Craft::file("..\\evil.js", b"x")],
            vec![],
            "backslash",
            "evil.js",
        ),
        (
            "NUL byte",
            vec![index(), named(b"a\0.js", b"x")],
            vec![],
            "NUL",
            "a\\0.js",
        ),
        (
            "control character",
            vec![index(), named(b"a\x1b.js", b"x")],
            vec![],
            "control character",
            "a",
        ),
        (
            "not UTF-8",
            vec![index(), named(b"caf\xe9.js", b"x")],
            vec![],
            "not valid UTF-8",
            "caf",
        ),
        (
            "symlink",
            vec![
                index(),
                Craft {
                    unix_mode: Some(0o120_777),
                    ..Craft::file("link.js", b"/etc/passwd")
                },
            ],
            vec![],
            "symbolic link",
            "link.js",
        ),
        (
            "FIFO",
            vec![
                index(),
                Craft {
                    unix_mode: Some(0o010_644),
                    ..Craft::file("pipe", b"")
                },
            ],
            vec![],
            "not a regular file",
            "pipe",
        ),
        (
            "duplicate",
            vec![
                index(),
                Craft::file("app.js", b"1"),
                Craft::file("app.js", b"2"),
            ],
            vec![],
            "appears twice",
            "app.js",
        ),
        (
            "case collision",
            vec![
                index(),
                Craft::file("App.js", b"1"),
                Craft::file("app.js", b"2"),
            ],
            vec![],
            "letter case",
            "app.js",
        ),
        (
            "normalization collision",
            vec![
                index(),
                Craft::file("caf\u{e9}.js", b"1"),
                Craft::file("cafe\u{301}.js", b"2"),
            ],
            vec![],
            "Unicode normalization",
            "cafe",
        ),
        (
            "file used as folder",
            vec![
                index(),
                Craft::file("lib", b"1"),
                Craft::file("lib/x.js", b"2"),
            ],
            vec![],
            "uses it as a folder",
            "lib",
        ),
        (
            "encrypted",
            vec![
                index(),
                Craft {
                    flags: 1,
                    ..Craft::file("secret.js", b"x")
                },
            ],
            vec![],
            "encrypted",
            "secret.js",
        ),
        (
            "unsupported compression",
            vec![
                index(),
                Craft {
                    method: Some(12),
                    ..Craft::file("b.js", b"x")
                },
            ],
            vec![],
            "compression method",
            "b.js",
        ),
        (
            "overlapping entries",
            vec![
                index(),
                Craft::file("a.js", b"shared bytes"),
                Craft {
                    alias_of: Some(1),
                    ..Craft::file("b.js", b"")
                },
            ],
            vec![],
            "overlap",
            "a.js",
        ),
        (
            "bomb past the total",
            vec![
                index(),
                Craft {
                    deflate: true,
                    ..Craft::file("big.bin", &zeros(3 << 20))
                },
            ],
            vec!["--max-unzipped-size", "1M"],
            "inflates to more than",
            "",
        ),
        (
            "bomb past the ratio",
            vec![
                index(),
                Craft {
                    deflate: true,
                    ..Craft::file("zeros.bin", &zeros(8 << 20))
                },
            ],
            vec![],
            "times its compressed size",
            "zeros.bin",
        ),
        (
            "lying declared size",
            vec![
                index(),
                Craft {
                    deflate: true,
                    declared_size: Some(100),
                    ..Craft::file("liar.bin", &zeros(300_000))
                },
            ],
            vec![],
            "refused",
            "liar.bin",
        ),
        (
            "no index.html",
            vec![Craft::file("app.js", b"x")],
            vec![],
            "no index.html",
            "",
        ),
    ];
    let mut messages = std::collections::HashSet::new();
    for (case, entries, flags, want, names) in cases {
        let zip = dir.path().join("bad.zip");
        std::fs::write(&zip, craft_zip(&entries)).unwrap();
        let mut args = vec![
            "pack",
            s(&zip),
            "--app",
            "com.example.app",
            "--version",
            "2.0.0",
            "--key",
            s(&key),
            "--store",
            s(&store),
        ];
        args.extend(flags);
        let err = run_err(&args);
        assert!(err.contains(want), "{case}: {err}");
        assert!(
            err.contains(names),
            "{case}: error does not name `{names}`: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{case}: one line: {err}");
        assert!(!err.contains("panicked"), "{case}: {err}");
        assert_eq!(listing(&store), before, "{case}: the store changed");
        messages.insert(err);
    }
    assert_eq!(messages.len(), 21, "every case has its own error");

    // A truncated or foreign file is not a zip; a fresh store path is not
    // even created.
    let good = craft_zip(&[index(), Craft::file("a.js", b"x")]);
    let zip = dir.path().join("cut.zip");
    std::fs::write(&zip, &good[..good.len() - 10]).unwrap();
    let fresh = dir.path().join("fresh-store");
    let err = run_err(&pack_args(
        &zip,
        "com.example.app",
        "2.0.0",
        &key,
        &fresh,
        &[],
    ));
    assert!(err.contains("not a readable zip"), "{err}");
    assert!(!fresh.exists());
}

#[test]
fn capgo_cli_zip_gives_the_same_bundle_as_its_folder() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/capgo");
    let zip = fixtures.join("fixture.zip");
    // The fixture is the file the CLI printed the checksum of.
    let printed = std::fs::read_to_string(fixtures.join("fixture.zip.sha256")).unwrap();
    let actual = {
        use sha2_check::sha256_hex;
        sha256_hex(&std::fs::read(&zip).unwrap())
    };
    assert_eq!(printed.split_whitespace().next().unwrap(), actual);

    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let pack = |src: &Path, store: &str| {
        let out = run_ok(&[
            "pack",
            s(src),
            "--app",
            "com.example.fixture",
            "--version",
            "1.0.0",
            "--key",
            s(&key),
            "--store",
            s(&dir.path().join(store)),
            "--json",
        ]);
        json(&out)
    };
    let from_zip = pack(&zip, "a");
    let from_dir = pack(&fixtures.join("dist"), "b");
    assert_eq!(from_zip["bundle_id"], from_dir["bundle_id"]);
    assert_eq!(from_zip["files"], 5);

    // Capgo also accepts everything inside one top-level folder.
    let nested = dir.path().join("nested.zip");
    std::fs::write(
        &nested,
        craft_zip(&[
            Craft::file("www/", b""),
            Craft::file(
                "www/index.html",
                &std::fs::read(fixtures.join("dist/index.html")).unwrap(),
            ),
            Craft::file(
                "www/assets/app.js",
                &std::fs::read(fixtures.join("dist/assets/app.js")).unwrap(),
            ),
        ]),
    )
    .unwrap();
    let out = pack(&nested, "c");
    assert_eq!(out["files"], 2);
}

/// SHA-256 for the fixture check, via the protocol crate's export (which
/// the tests otherwise treat as a black box): a tiny shim over sha2 would
/// add a dependency, so hash with the one lanseed already uses.
mod sha2_check {
    pub fn sha256_hex(bytes: &[u8]) -> String {
        let m = lanseed_protocol::manifest::FileDigest::of_bytes(bytes);
        m.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[test]
fn bundle_zip_is_deterministic_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let build = dir.path().join("build");
    lanseed_tests::generate_build(&build, 60, 1 << 20, 5);
    let mut ids = Vec::new();
    let mut shas = Vec::new();
    for store in ["s1", "s2"] {
        let store = dir.path().join(store);
        let out = run_ok(&pack_args(
            &build,
            "com.example.app",
            "1.0.0",
            &key,
            &store,
            &["--json"],
        ));
        ids.push(json(&out)["bundle_id"].clone());
        for round in 0..2 {
            let zip = dir.path().join(format!(
                "{}-{round}.zip",
                store.file_name().unwrap().to_str().unwrap()
            ));
            let out = run_ok(&[
                "export",
                "com.example.app",
                "production",
                "--zip",
                "--out",
                s(&zip),
                "--store",
                s(&store),
                "--json",
            ]);
            let v = json(&out);
            assert_eq!(
                v["sha256"].as_str().unwrap(),
                sha2_check::sha256_hex(&std::fs::read(&zip).unwrap())
            );
            shas.push(v["sha256"].clone());
        }
    }
    assert_eq!(ids[0], ids[1]);
    assert!(
        shas.windows(2).all(|w| w[0] == w[1]),
        "byte-identical zips: {shas:?}"
    );

    // The zip packs back into the same bundle.
    let zip = dir.path().join("s1-0.zip");
    let out = run_ok(&[
        "pack",
        s(&zip),
        "--app",
        "com.example.app",
        "--version",
        "1.0.1",
        "--key",
        s(&key),
        "--store",
        s(&dir.path().join("s3")),
        "--json",
    ]);
    assert_eq!(json(&out)["bundle_id"], ids[0]);
}

#[test]
fn release_file_round_trip_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    lanseed_tests::generate_build(&build, 40, 600_000, 9);
    std::fs::write(build.join("large.bin"), vec![3u8; 2_500_000]).unwrap();
    let a = dir.path().join("a");
    let packed = json(&run_ok(&[
        "pack",
        s(&build),
        "--app",
        "com.example.app",
        "--version",
        "3.1.0",
        "--channel",
        "beta",
        "--key",
        s(&key),
        "--store",
        s(&a),
        "--json",
        "--notes",
        "USB",
    ]));
    let file = dir.path().join("release.lanseed");
    run_ok(&[
        "export",
        "com.example.app",
        "beta",
        "--out",
        s(&file),
        "--store",
        s(&a),
    ]);

    let b = dir.path().join("b");
    let imported = json(&run_ok(&[
        "import",
        s(&file),
        "--trust",
        &trust,
        "--store",
        s(&b),
        "--json",
    ]));
    for k in [
        "release_id",
        "bundle_id",
        "seq",
        "version",
        "channel",
        "notes",
        "publisher",
    ] {
        assert_eq!(imported[k], packed[k], "{k}");
    }
    let la = json(&run_ok(&["releases", "--store", s(&a), "--json"]));
    let lb = json(&run_ok(&["releases", "--store", s(&b), "--json"]));
    assert_eq!(la, lb);
    run_ok(&["store", "verify", "--store", s(&b), "--trust", &trust]);
    // Selecting by version works too, and importing twice changes nothing.
    run_ok(&[
        "export",
        "com.example.app",
        "3.1.0",
        "--out",
        s(&dir.path().join("v.lanseed")),
        "--store",
        s(&a),
    ]);
    let again = json(&run_ok(&[
        "import",
        s(&file),
        "--trust",
        &trust,
        "--store",
        s(&b),
        "--json",
    ]));
    assert_eq!(again["already_present"], true);

    // Untrusted: another key's trust file, and a scope that excludes beta.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let other_key = keygen(&other);
    let c = dir.path().join("c");
    let err = run_err(&[
        "import",
        s(&file),
        "--trust",
        &format!("{}.pub", other_key.display()),
        "--store",
        s(&c),
    ]);
    assert!(err.contains("not trusted"), "{err}");
    let scoped = dir.path().join("scoped.trust");
    let line = std::fs::read_to_string(&trust).unwrap();
    std::fs::write(&scoped, format!("{} channels=production\n", line.trim())).unwrap();
    let err = run_err(&["import", s(&file), "--trust", s(&scoped), "--store", s(&c)]);
    assert!(err.contains("not trusted for app"), "{err}");
    assert!(!c.exists(), "nothing written for a refused file");

    // Truncated.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.lanseed");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = run_err(&["import", s(&cut), "--trust", &trust, "--store", s(&c)]);
    assert!(err.contains("release file"), "{err}");

    // Every single byte flipped, in process (thousands of imports), into a
    // store that must never change.
    let trust_list = lanseed_protocol::TrustList::read(Path::new(&trust)).unwrap();
    let store = lanseed_protocol::Store::create(&dir.path().join("d")).unwrap();
    let before = listing(store.root());
    let bad = dir.path().join("bad.lanseed");
    let step = (bytes.len() / 3000).max(1);
    let mut flips = 0;
    for i in (0..bytes.len()).step_by(step) {
        let mut t = bytes.clone();
        t[i] ^= 0x20;
        std::fs::write(&bad, &t).unwrap();
        let result = lanseed_protocol::release_file::ReleaseFile::open(
            &bad,
            &trust_list,
            lanseed_protocol::zip::ZipLimits::default(),
        )
        .and_then(|f| f.import(&store));
        assert!(
            result.is_err(),
            "flipping byte {i} of {} was accepted",
            bytes.len()
        );
        flips += 1;
    }
    assert!(flips >= 3000.min(bytes.len()), "{flips}");
    assert_eq!(listing(store.root()), before);
}

#[test]
fn published_static_tree_serves_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let build = dir.path().join("build");
    lanseed_tests::generate_build(&build, 50, 800_000, 3);
    let store = dir.path().join("store");
    for v in ["1.0.0", "1.1.0"] {
        std::fs::write(build.join("index.html"), format!("<h1>{v}</h1>")).unwrap();
        run_ok(&pack_args(&build, "com.example.app", v, &key, &store, &[]));
    }
    let out = dir.path().join("www");
    let first = json(&run_ok(&[
        "publish-static",
        "--store",
        s(&store),
        "--out",
        s(&out),
        "--json",
    ]));
    assert_eq!(first["releases"], 2);
    assert!(
        first["blobs_compressed"].as_u64().unwrap() > 0,
        "text compresses"
    );
    let again = json(&run_ok(&[
        "publish-static",
        "--store",
        s(&store),
        "--out",
        s(&out),
        "--json",
    ]));
    assert_eq!(again["blobs_written"], 0, "publishing again adds nothing");

    // Serve it with a stock web server on loopback, port chosen by the OS.
    let mut server = std::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            s(&out),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let port = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        line.split("port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    let result = std::panic::catch_unwind(|| {
        let (status, body) = http_get(port, "index.json");
        assert_eq!(status, 200);
        let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let releases = index["releases"].as_array().unwrap();
        assert_eq!(releases.len(), 2);
        let trust = lanseed_protocol::TrustList::read(Path::new(&format!("{}.pub", key.display())))
            .unwrap();
        let mut blobs = 0;
        for r in releases {
            let (_, record) = http_get(port, r["record"].as_str().unwrap());
            let signed = lanseed_protocol::SignedRelease::from_bytes(&record).unwrap();
            signed.verify(&trust).unwrap();
            assert_eq!(signed.id().to_string(), r["release_id"]);
            let (_, mbytes) = http_get(port, r["manifest"].as_str().unwrap());
            assert_eq!(Hash::of(&mbytes), signed.release().bundle_id.0);
            let manifest = Manifest::from_bytes(&mbytes).unwrap();
            let (_, listing) = http_get(port, r["files"].as_str().unwrap());
            let listing: serde_json::Value = serde_json::from_slice(&listing).unwrap();
            let files = listing["files"].as_array().unwrap();
            assert_eq!(files.len(), manifest.files().len());
            for (f, m) in files.iter().zip(manifest.files()) {
                let (status, body) = http_get(port, f["blob"].as_str().unwrap());
                assert_eq!(status, 200);
                let data = if f["encoding"] == "gzip" {
                    use std::io::Read;
                    let mut d = Vec::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut d)
                        .unwrap();
                    d
                } else {
                    body
                };
                assert_eq!(Hash::of(&data), m.blake3, "{}", m.path);
                blobs += 1;
            }
        }
        assert!(blobs >= 100);
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn declared_sizes_are_not_trusted() {
    use lanseed_protocol::zip::{Layout, SafeZip, ZipError, ZipLimits};
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("liar.zip");
    std::fs::write(
        &zip,
        craft_zip(&[
            Craft::file("index.html", INDEX),
            Craft {
                deflate: true,
                declared_size: Some(100),
                ..Craft::file("liar.bin", &vec![0u8; 3 << 20])
            },
        ]),
    )
    .unwrap();
    let limits = ZipLimits {
        max_total: 1 << 20,
        ..ZipLimits::default()
    };
    // The central directory promises 100 bytes, well under the cap...
    let mut z = SafeZip::open(&zip, limits, Layout::Bundle).unwrap();
    let liar = z
        .entries()
        .iter()
        .position(|e| e.name == "liar.bin")
        .unwrap();
    let mut seen = 0u64;
    let err = z.read(liar, None, &mut |c| {
        seen += c.len() as u64;
        Ok(())
    });
    // ...and reading it stops with an error, never past the cap.
    let err = err.unwrap_err();
    assert!(seen <= 1 << 20, "{seen} bytes passed");
    assert!(
        matches!(err, ZipError::TotalTooLarge(_) | ZipError::Entry { .. }),
        "{err}"
    );
    eprintln!("lying entry: {err} after {seen} bytes");
}

#[test]
fn every_single_byte_of_a_release_file_is_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path());
    let trust_path = format!("{}.pub", key.display());
    let build = dir.path().join("build");
    std::fs::create_dir_all(build.join("assets")).unwrap();
    std::fs::write(build.join("index.html"), "<h1>tiny</h1>").unwrap();
    std::fs::write(build.join("assets/app.js"), "console.log(1)").unwrap();
    let a = dir.path().join("a");
    run_ok(&pack_args(
        &build,
        "com.example.app",
        "1.0.0",
        &key,
        &a,
        &[],
    ));
    let file = dir.path().join("tiny.lanseed");
    run_ok(&[
        "export",
        "com.example.app",
        "production",
        "--out",
        s(&file),
        "--store",
        s(&a),
    ]);
    let bytes = std::fs::read(&file).unwrap();
    let trust = lanseed_protocol::TrustList::read(Path::new(&trust_path)).unwrap();
    let store = lanseed_protocol::Store::create(&dir.path().join("b")).unwrap();
    let before = listing(store.root());
    let bad = dir.path().join("bad.lanseed");
    for i in 0..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        std::fs::write(&bad, &t).unwrap();
        let result = lanseed_protocol::release_file::ReleaseFile::open(
            &bad,
            &trust,
            lanseed_protocol::zip::ZipLimits::default(),
        )
        .and_then(|f| f.import(&store));
        assert!(
            result.is_err(),
            "byte {i} of {} flipped was accepted",
            bytes.len()
        );
    }
    assert_eq!(listing(store.root()), before, "nothing written");
    // And the untouched file imports.
    lanseed_protocol::release_file::ReleaseFile::open(
        &file,
        &trust,
        lanseed_protocol::zip::ZipLimits::default(),
    )
    .unwrap()
    .import(&store)
    .unwrap();
}
