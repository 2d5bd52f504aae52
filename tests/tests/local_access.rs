//! Who may talk to a running node through its control sockets: the node's
//! own user and root; with `--control-group GROUP`, that group's members
//! too (by primary or supplementary group); anyone else is refused by the
//! peer-credential check, even when the socket's file mode would let them
//! in. The sockets live under the runtime directory at a short path found
//! from the store's path alone, whatever its length; a stale one left by a
//! killed node is replaced.
//!
//! The node runs as root (the tests do); the refused and served clients
//! run as `nobody` through `setpriv`, with a copy of the binary and a store
//! path they can traverse.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lanseed_tests::net::{Netns, NodeProc};
use lanseed_tests::{json, keygen, lanseed_bin, node_status, path_str as s, run_err, run_ok};

/// The group the tests let in; `nobody` is not a member of it.
const GROUP: &str = "users";
const LISTEN: [&str; 3] = ["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];

/// A directory `nobody` can traverse, with a copy of the `lanseed` binary
/// it can run and a store path longer than a Unix socket path may be.
struct Fixture {
    dir: tempfile::TempDir,
    bin: PathBuf,
    store: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
    open(dir.path()).unwrap();
    let bin = dir.path().join("lanseed");
    std::fs::copy(lanseed_bin(), &bin).unwrap();
    open(&bin).unwrap();
    let deep = dir.path().join("a".repeat(100)).join("b".repeat(100));
    std::fs::create_dir_all(&deep).unwrap();
    for p in [dir.path().join("a".repeat(100)), deep.clone()] {
        open(&p).unwrap();
    }
    let store = deep.join("store");
    Fixture { dir, bin, store }
}

impl Fixture {
    /// `lanseed ARGS` run as nobody, with `groups` (setpriv's options).
    fn as_nobody(&self, groups: &[&str], args: &[&str]) -> Output {
        Command::new("setpriv")
            .args(["--reuid", "nobody"])
            .args(groups)
            .arg(&self.bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .expect("run setpriv (util-linux)")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode_and_group(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.mode() & 0o777, m.gid())
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

const NOGROUP: [&str; 3] = ["--regid", "nogroup", "--clear-groups"];

#[test]
fn only_the_nodes_user_and_root_are_served_whatever_the_file_modes() {
    let ns = Netns::new();
    let f = fixture();
    let mut node = NodeProc::start(&ns, &f.store, &LISTEN);
    assert!(s(&f.store).len() > 200);
    let socket = PathBuf::from(node_status(&f.store)["control_socket"].as_str().unwrap());
    let dir = socket.parent().unwrap().to_owned();
    assert!(socket.starts_with("/run/lanseed"), "{}", socket.display());
    assert!(s(&socket).len() < 64, "{}", socket.display());
    assert_eq!(mode_and_group(&socket).0, 0o600);
    assert_eq!(mode_and_group(&dir).0, 0o700);
    assert_eq!(mode_and_group(&f.store).0, 0o700, "a new store is private");
    assert!(
        node.log_text()
            .contains(&format!("control_socket={}", socket.display()))
    );

    // Only the credential check stands between nobody and the node now.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = f.as_nobody(&NOGROUP, &["status", "--store", s(&f.store)]);
    assert!(!out.status.success(), "nobody was served");
    let err = stderr(&out);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("uid 65534"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    // Root still is served.
    assert!(node_status(&f.store)["peer_id"].is_string());
    node.stop();
    assert!(
        !socket.exists() && !dir.exists(),
        "a clean stop removes both"
    );
}

#[test]
fn a_control_group_lets_its_members_in_and_no_one_else() {
    let ns = Netns::new();
    let f = fixture();
    let gid = gid_of(GROUP);
    let mut args = LISTEN.to_vec();
    args.extend(["--control-group", GROUP]);
    let mut node = NodeProc::start(&ns, &f.store, &args);
    let socket = PathBuf::from(node_status(&f.store)["control_socket"].as_str().unwrap());
    assert_eq!(mode_and_group(&socket), (0o660, gid));
    assert_eq!(mode_and_group(socket.parent().unwrap()), (0o750, gid));

    // A member by supplementary group, and one by primary group.
    for groups in [
        &["--regid", "nogroup", "--groups", GROUP][..],
        &["--regid", GROUP, "--clear-groups"][..],
    ] {
        let out = f.as_nobody(groups, &["status", "--store", s(&f.store), "--json"]);
        assert!(out.status.success(), "{groups:?}: {}", stderr(&out));
        assert!(json(&out)["peer_id"].is_string());
    }
    // Not a member: the directory keeps it out.
    let out = f.as_nobody(&NOGROUP, &["status", "--store", s(&f.store)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    // Not a member, even with the file modes opened: the credential check.
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = f.as_nobody(&NOGROUP, &["status", "--store", s(&f.store)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("uid 65534") && err.contains("members of group"),
        "{err}"
    );
    node.stop();
}

#[test]
fn the_device_socket_follows_the_same_rules() {
    let ns = Netns::new();
    let f = fixture();
    let key = keygen(f.dir.path());
    let trust = format!("{}.pub", key.display());
    let builtin = f.dir.path().join("builtin");
    std::fs::create_dir_all(&builtin).unwrap();
    std::fs::write(builtin.join("index.html"), "<h1>builtin</h1>").unwrap();
    let mut args = LISTEN.to_vec();
    args.extend([
        "--app",
        "com.example.kiosk",
        "--trust",
        &trust,
        "--builtin",
        s(&builtin),
        "--serve",
        "127.0.0.1:0",
        "--control-group",
        GROUP,
    ]);
    let mut node = NodeProc::start_cmd(&ns, "device", &f.store, &args);
    let list = ["device", "list", "--store", s(&f.store)];
    run_ok(&list);
    let out = f.as_nobody(&["--regid", "nogroup", "--groups", GROUP], &list);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = f.as_nobody(&NOGROUP, &list);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    node.stop();
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_node_is_named() {
    let ns = Netns::new();
    let f = fixture();
    let mut node = NodeProc::start(&ns, &f.store, &LISTEN);
    let socket = PathBuf::from(node_status(&f.store)["control_socket"].as_str().unwrap());
    node.kill9();
    assert!(socket.exists(), "a killed node cannot clean up");
    let err = run_err(&["status", "--store", s(&f.store)]);
    assert!(err.contains("no lanseed node is running"), "{err}");

    let mut again = NodeProc::start(&ns, &f.store, &LISTEN);
    assert!(node_status(&f.store)["peer_id"].is_string());
    let err = run_err(&["seed", "--store", s(&f.store), "--no-mdns"]);
    assert!(err.contains("another lanseed node is running"), "{err}");
    again.stop();

    let err = run_err(&[
        "seed",
        "--store",
        s(&f.store),
        "--control-group",
        "no-such-group-lsd",
    ]);
    assert!(err.contains("no such group"), "{err}");
}
