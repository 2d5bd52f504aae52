//! lanseed's data and its rules, on disk and on the wire.
//!
//! This crate is the leaf of the workspace: types, formats, hashing and
//! signatures, plus the store (a plain directory). It opens no socket and
//! needs no async runtime, so the device updater, the node and the tests all
//! share one definition of what a bundle, a release and a store are.
//!
//! - [`hash`]: BLAKE3 content addresses.
//! - [`path`]: the normalized relative paths a bundle may contain.
//! - [`manifest`]: every file of a web build, and the bundle id.
//! - [`piecehash`]: piece hashes, the subtrees of a file's BLAKE3 tree.
//! - [`release`]: signed release statements and their verification.
//! - [`keys`] and [`trust`]: publisher keys and the pinned trust list.
//! - [`store`]: content-addressed blobs, manifests and the release index.
//! - [`pack`]: a web build folder into a store, as a signed release.
//! - [`capgo`]: Capgo encryption v2 artefacts, made by the publisher.
//! - [`canonical`]: the byte layout of everything that is hashed or signed
//!   (see `protocol/FORMATS.md`).
//! - [`limits`]: the size limits every decoder checks before allocating.

pub mod canonical;
pub mod capgo;
pub mod crashpoint;
pub mod hash;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod pack;
pub mod pack_cache;
pub mod path;
pub mod piecehash;
pub mod pieces;
pub mod release;
pub mod release_file;
pub mod report;
pub mod rollout;
pub mod static_tree;
pub mod store;
pub mod trust;
pub mod wire;
pub mod zip;

pub use hash::{BundleId, Hash, ReleaseId};
pub use keys::{PublicKey, SecretKey};
pub use manifest::{FileEntry, Manifest};
pub use path::BundlePath;
pub use release::{Release, SignedRelease, VerifiedRelease};
pub use store::Store;
pub use trust::TrustList;
