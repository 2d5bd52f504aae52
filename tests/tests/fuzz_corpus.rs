//! The fuzz targets' committed corpus, replayed as ordinary tests.
//!
//! Every input in `fuzz/corpus/<target>/` goes through the check its fuzz
//! target runs (`fuzz/src/lib.rs`, included here as a module), so inputs
//! that once crashed stay fixed, and the corpus stays valid, with no
//! fuzzer and no nightly compiler. `write_seed_corpus` (ignored; run by
//! hand) wrote the seeds the fuzzing started from.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// Runs `check` over every input of `target`'s corpus, naming the input
/// that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = corpus_dir().join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
    }
}

#[test]
fn every_request_in_the_corpus_that_decodes_round_trips() {
    replay("wire_request", checks::wire_request);
}

#[test]
fn answers_in_the_corpus_decode_alike_whole_or_split_and_unpack_within_limits() {
    replay("wire_response", checks::wire_response);
}

#[test]
fn every_manifest_in_the_corpus_that_decodes_is_canonical() {
    replay("manifest", checks::manifest);
}

#[test]
fn every_release_in_the_corpus_that_decodes_is_canonical() {
    replay("release", checks::release);
}

#[test]
fn zips_in_the_corpus_stay_within_their_limits() {
    replay("zip_read", checks::zip_read);
}

#[test]
fn release_files_in_the_corpus_open_only_when_sealed_and_signed() {
    replay("release_file", checks::release_file);
}

#[test]
fn request_paths_in_the_corpus_never_leave_the_bundle() {
    replay("device_path", checks::device_path);
}

/// Writes the seed corpus: valid inputs made by lanseed's own encoders
/// (packed and exported like `lanseed pack` / `lanseed export` do), and
/// the hostile zips of `tests/zips.rs`. The fuzzing grew and minimised
/// the committed corpus from these.
#[test]
#[ignore = "writes fuzz/corpus; run by hand before fuzzing"]
fn write_seed_corpus() {
    seeds::write_all(&corpus_dir());
}

/// Only the seeds of releases with a Capgo section (layout `LSRELEA2`),
/// whose encryption is random: the rest of the corpus stays as it is.
#[test]
#[ignore = "writes fuzz/corpus; run by hand before fuzzing"]
fn write_capgo_seeds() {
    seeds::write_capgo(&corpus_dir());
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand before fuzzing"]
fn write_report_seeds() {
    seeds::write_reports(&corpus_dir());
}

mod seeds {
    use std::path::Path;

    use lanseed_protocol::pack::{PackOptions, pack_dir};
    use lanseed_protocol::release::Rollout;
    use lanseed_protocol::release_file::{ReleaseFile, export, export_bundle_zip};
    use lanseed_protocol::report::DeviceReport;
    use lanseed_protocol::wire::{self, Packed, Request, Response};
    use lanseed_protocol::zip::{Layout, SafeZip};
    use lanseed_protocol::{BundleId, Hash, Release, Store, TrustList};
    use lanseed_tests::zipcraft::{Craft, craft_zip};

    use super::checks;

    fn put(corpus: &Path, target: &str, name: &str, data: &[u8]) {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }

    /// A web build: its files' paths and contents.
    type Build = Vec<(&'static str, Vec<u8>)>;

    /// Bundles to pack, by name.
    fn builds() -> Vec<(&'static str, Build)> {
        let text = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| b"lanseed fuzz seed "[i % 18] ^ (i / 4096) as u8)
                .collect()
        };
        vec![
            (
                "one-page",
                vec![("index.html", b"<!doctype html>".to_vec())],
            ),
            (
                "spa",
                vec![
                    ("index.html", b"<!doctype html><script src=app.js>".to_vec()),
                    ("app.js", b"console.log(1)".to_vec()),
                    ("assets/empty.txt", Vec::new()),
                    ("assets/logo.svg", text(3000)),
                    ("assets/copy.svg", text(3000)),
                    ("caf\u{e9}/men\u{fc}.html", b"<p>menu".to_vec()),
                ],
            ),
            (
                "pieces",
                vec![
                    ("index.html", b"<p>big".to_vec()),
                    ("big.bin", text((1 << 20) + 4097)),
                ],
            ),
        ]
    }

    fn options(name: &str, full: bool) -> PackOptions {
        PackOptions {
            app: format!("com.example.{}", name.replace('-', "_")),
            channel: if full { "beta" } else { "production" }.into(),
            version: if full { "2.0.0-rc.1+build.5" } else { "1.0.0" }.into(),
            seq: Some(if full { u64::MAX } else { 1 }),
            created: 1_790_000_000,
            min_native_version: full.then(|| "3.1.4".into()),
            rollout: if full {
                Rollout::from_basis_points(1234).unwrap()
            } else {
                Rollout::FULL
            },
            expires: full.then_some(1_800_000_000),
            notes: full.then(|| "Notes: caf\u{e9}\n".into()),
            capgo: None,
        }
    }

    /// A release with Capgo artefacts (`LSRELEA2`), signed and as a
    /// statement, and its release file (which carries the payload bundle).
    pub fn write_capgo(corpus: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let key = checks::fuzz_key();
        let build = dir.path().join("build");
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("index.html"), b"<!doctype html><p>capgo").unwrap();
        let pem =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/data/capgo/cli-key.pem");
        let capgo = lanseed_protocol::capgo::CapgoPrivateKey::read(&pem).unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let opts = PackOptions {
            capgo: Some(capgo),
            ..options("capgo", false)
        };
        let packed = pack_dir(&store, &build, &opts, &key, &|_| {}).unwrap();
        let signed = packed.release.signed();
        assert_eq!(&signed.to_bytes()[..8], b"LSSIGRL1");
        put(corpus, "release", "capgo", &signed.to_bytes());
        let statement = signed.release().canonical_bytes().unwrap();
        assert_eq!(&statement[..8], b"LSRELEA2");
        put(corpus, "release", "capgo-statement", &statement);
        let file = dir.path().join("capgo.lanseed");
        export(&store, signed, &file).unwrap();
        let file = std::fs::read(&file).unwrap();
        let trust = TrustList::parse(&key.public().to_string()).unwrap();
        ReleaseFile::from_bytes(&file, &trust, checks::ZIP_LIMITS).expect("a seed opens");
        put(corpus, "release_file", "capgo", &file);
    }

    pub fn write_all(corpus: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let key = checks::fuzz_key();
        for (i, (name, files)) in builds().into_iter().enumerate() {
            let build = dir.path().join(name);
            for (path, data) in &files {
                let p = build.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, data).unwrap();
            }
            let store = Store::create(&dir.path().join(format!("store-{name}"))).unwrap();
            let packed = pack_dir(&store, &build, &options(name, i == 1), &key, &|_| {}).unwrap();
            let signed = packed.release.signed();
            put(corpus, "manifest", name, &packed.manifest.to_bytes());
            put(corpus, "release", name, &signed.to_bytes());
            let statement = signed.release().canonical_bytes().unwrap();
            put(corpus, "release", &format!("{name}-statement"), &statement);
            let file = dir.path().join(format!("{name}.lanseed"));
            export(&store, signed, &file).unwrap();
            let file = std::fs::read(&file).unwrap();
            let trust = TrustList::parse(&key.public().to_string()).unwrap();
            ReleaseFile::from_bytes(&file, &trust, checks::ZIP_LIMITS).expect("a seed opens");
            put(corpus, "release_file", name, &file);
            let zip = dir.path().join(format!("{name}.zip"));
            export_bundle_zip(&store, &packed.manifest.id(), &zip).unwrap();
            let zip = std::fs::read(&zip).unwrap();
            let cursor = std::io::Cursor::new(&zip[..]);
            SafeZip::from_reader(cursor, "seed", checks::ZIP_LIMITS, Layout::Bundle)
                .expect("a seed opens");
            put(corpus, "zip_read", name, &zip);
        }
        write_capgo(corpus);
        let options_only = Release {
            app: "a.b".into(),
            channel: "c".into(),
            version: "0.0.0".into(),
            bundle_id: BundleId(Hash::of(b"")),
            seq: 0,
            created: 0,
            min_native_version: Some("0.0.1".into()),
            rollout: Rollout::from_basis_points(0).unwrap(),
            expires: Some(0),
            notes: Some(String::new()),
            capgo: None,
        };
        put(
            corpus,
            "release",
            "options-statement",
            &options_only.canonical_bytes().unwrap(),
        );
        let capgo = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/capgo/fixture.zip");
        put(corpus, "zip_read", "capgo", &std::fs::read(capgo).unwrap());
        for (name, entries) in hostile_zips() {
            put(corpus, "zip_read", name, &craft_zip(&entries));
        }
        for (i, request) in requests().iter().enumerate() {
            let frame = wire::encode_request(request);
            assert_eq!(&wire::decode_request(&frame).unwrap(), request);
            put(corpus, "wire_request", &format!("request-{i}"), &frame);
        }
        for (i, response) in responses().iter().enumerate() {
            let frame = wire::encode_response(response);
            assert_eq!(&wire::decode_response(&frame).unwrap(), response);
            put(corpus, "wire_response", &format!("response-{i}"), &frame);
        }
        // Frames that declare more than they hold.
        put(
            corpus,
            "wire_request",
            "have-2-40",
            &[&[3][..], &[7; 32], &[253, 0, 0, 0, 0, 0, 1, 0, 0]].concat(),
        );
        put(
            corpus,
            "wire_response",
            "body-2-40",
            &[1, 1, 100, 253, 0, 0, 0, 0, 0, 1, 0, 0, 9],
        );
        for (i, path) in PATHS.iter().enumerate() {
            put(
                corpus,
                "device_path",
                &format!("path-{i:02}"),
                path.as_bytes(),
            );
        }
    }

    fn requests() -> Vec<Request> {
        let key = checks::fuzz_key();
        let record = Release {
            app: "com.example.app".into(),
            channel: "production".into(),
            version: "1.0.0".into(),
            bundle_id: BundleId(Hash::of(b"m")),
            seq: 1,
            created: 1,
            min_native_version: None,
            rollout: Rollout::FULL,
            expires: None,
            notes: None,
            capgo: None,
        }
        .sign(&key)
        .unwrap()
        .to_bytes();
        vec![
            Request::Announce {
                releases: vec![record.clone(), record.clone()],
            },
            Request::Announce { releases: vec![] },
            Request::GetManifest { bundle: [1; 32] },
            Request::GetPieces {
                pieces: vec![([2; 32], 0), ([3; 32], 300), ([4; 32], u32::MAX)],
            },
            Request::Have {
                bundle: [5; 32],
                release: record,
                bits: vec![0xff; 300],
                fetching: vec![0x01],
            },
        ]
        .into_iter()
        .chain(reports())
        .collect()
    }

    /// Device reports: one that rolled back from a failed bundle, one of a
    /// device on its builtin bundle with no event yet.
    pub fn reports() -> Vec<Request> {
        let report = DeviceReport {
            device_id: "kiosk-7".into(),
            app: "com.example.kiosk".into(),
            channel: "production".into(),
            bundle: Some([6; 32]),
            version: "1.2.3".into(),
            seq: 1_800_000_000,
            native_version: "2.0.0".into(),
            status: "success".into(),
            event: Some("update_fail".into()),
            time: 1_800_000_100,
            failed: Some([7; 32]),
        };
        let builtin = DeviceReport {
            bundle: None,
            version: "builtin".into(),
            seq: 0,
            event: None,
            failed: None,
            ..report.clone()
        };
        vec![Request::Report(report), Request::Report(builtin)]
    }

    /// The device reports of [`reports`], as seeds.
    pub fn write_reports(corpus: &Path) {
        for (i, request) in reports().iter().enumerate() {
            let frame = wire::encode_request(request);
            assert_eq!(&wire::decode_request(&frame).unwrap(), request);
            put(corpus, "wire_request", &format!("report-{i}"), &frame);
        }
    }

    fn responses() -> Vec<Response> {
        let text: Vec<u8> = b"lanseed ".iter().cycle().take(70_000).copied().collect();
        vec![
            Response::Ack,
            Response::NotFound,
            Response::Busy,
            Response::Manifest(Packed::raw(b"LSMANIF2".to_vec())),
            Response::Manifest(Packed::compress(text.clone())),
            Response::Pieces(Packed::compress(text[..4000].to_vec())),
            Response::Pieces(Packed::raw(vec![0xa5; 300])),
        ]
    }

    const PATHS: &[&str] = &[
        "/",
        "/index.html",
        "/assets/app.js",
        "//assets//img/logo.png/",
        "/settings/profile",
        "/v1.2",
        "/v1.2/notes.txt",
        "/../etc/passwd",
        "/%2e%2e/%2E%2E/etc/passwd",
        "/caf%C3%A9.js",
        "/a%20b/c%2520d",
        "/a\\..\\b",
        "/%FF",
        "/50%",
        "/..a/b..",
    ];

    fn hostile_zips() -> Vec<(&'static str, Vec<Craft>)> {
        let index = || Craft::file("index.html", b"<!doctype html>");
        let named = |name: &[u8], data: &[u8]| Craft {
            name: name.to_vec(),
            data: data.to_vec(),
            ..Craft::default()
        };
        vec![
            (
                "top-folder",
                vec![
                    named(b"dist/", b""),
                    Craft {
                        deflate: true,
                        ..Craft::file("dist/index.html", b"<!doctype html><p>hi hi hi")
                    },
                    Craft::file("dist/app.js", b"1"),
                ],
            ),
            ("absolute", vec![index(), Craft::file("/etc/passwd", b"x")]),
            ("dotdot", vec![index(), Craft::file("a/../../x", b"x")]),
            ("backslash", vec![index(), Craft::file("a\\b", b"x")]),
            ("not-utf8", vec![index(), named(b"caf\xe9.js", b"x")]),
            (
                "symlink",
                vec![
                    index(),
                    Craft {
                        unix_mode: Some(0o120_777),
                        ..Craft::file("link.js", b"/etc/passwd")
                    },
                ],
            ),
            (
                "duplicate",
                vec![
                    index(),
                    Craft::file("a.js", b"1"),
                    Craft::file("a.js", b"2"),
                ],
            ),
            (
                "case",
                vec![
                    index(),
                    Craft::file("A.js", b"1"),
                    Craft::file("a.js", b"2"),
                ],
            ),
            (
                "nfc",
                vec![
                    index(),
                    Craft::file("caf\u{e9}.js", b"1"),
                    Craft::file("cafe\u{301}.js", b"2"),
                ],
            ),
            (
                "file-is-folder",
                vec![index(), Craft::file("a", b"1"), Craft::file("a/b", b"2")],
            ),
            (
                "encrypted",
                vec![
                    index(),
                    Craft {
                        flags: 1,
                        ..Craft::file("s.js", b"x")
                    },
                ],
            ),
            (
                "method",
                vec![
                    index(),
                    Craft {
                        method: Some(12),
                        ..Craft::file("b.js", b"x")
                    },
                ],
            ),
            (
                "overlap",
                vec![
                    index(),
                    Craft::file("a.js", b"1"),
                    Craft {
                        alias_of: Some(1),
                        ..Craft::file("b.js", b"")
                    },
                ],
            ),
            (
                "ratio-bomb",
                vec![
                    index(),
                    Craft {
                        deflate: true,
                        ..Craft::file("zeros.bin", &vec![0; 300_000])
                    },
                ],
            ),
            (
                "lying-size",
                vec![
                    index(),
                    Craft {
                        deflate: true,
                        declared_size: Some(100),
                        ..Craft::file("liar.bin", &vec![7; 5_000])
                    },
                ],
            ),
            ("no-index", vec![Craft::file("app.js", b"x")]),
        ]
    }
}

#[test]
fn the_request_corpus_holds_device_reports_that_decode() {
    let dir = corpus_dir().join("wire_request");
    let reports = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .filter(|b| {
            matches!(
                lanseed_protocol::wire::decode_request(b),
                Ok(lanseed_protocol::wire::Request::Report(_))
            )
        })
        .count();
    assert!(
        reports >= 2,
        "{reports} device reports in {}",
        dir.display()
    );
}

#[test]
fn the_release_corpora_hold_capgo_releases_that_decode() {
    let signed = std::fs::read(corpus_dir().join("release/seed-capgo")).unwrap();
    let r = lanseed_protocol::SignedRelease::from_bytes(&signed).expect("the seed decodes");
    assert!(r.release().capgo.is_some(), "an LSRELEA2 release");
    let statement = std::fs::read(corpus_dir().join("release/seed-capgo-statement")).unwrap();
    assert_eq!(&statement[..8], b"LSRELEA2");
    let file = std::fs::read(corpus_dir().join("release_file/seed-capgo")).unwrap();
    let trust =
        lanseed_protocol::TrustList::parse(&checks::fuzz_key().public().to_string()).unwrap();
    let opened =
        lanseed_protocol::release_file::ReleaseFile::from_bytes(&file, &trust, checks::ZIP_LIMITS)
            .expect("the release file opens");
    assert!(opened.release().release().capgo.is_some());
}
