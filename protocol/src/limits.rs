//! Size limits. Every decoder checks these before it allocates, because
//! bytes from a peer, a file or a zip are untrusted until verified.

/// Size of a piece: the unit a receiver can verify on its own.
/// Files larger than this carry one BLAKE3 hash per piece in the manifest.
pub const PIECE_SIZE: u64 = 1 << 20;

/// Largest single file a bundle may hold (1 GiB).
pub const MAX_FILE_SIZE: u64 = 1 << 30;

/// Most files a bundle may hold.
pub const MAX_FILES: usize = 200_000;

/// Longest path inside a bundle, in bytes of UTF-8.
pub const MAX_PATH_LEN: usize = 1024;

/// Largest canonical manifest, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;

/// Longest app id (reverse DNS names are at most 255 bytes).
pub const MAX_APP_LEN: usize = 255;

/// Longest channel name.
pub const MAX_CHANNEL_LEN: usize = 64;

/// Longest version or native version string.
pub const MAX_VERSION_LEN: usize = 128;

/// Longest release notes, in bytes of UTF-8.
pub const MAX_NOTES_LEN: usize = 16 << 10;

/// Largest canonical release statement, in bytes.
pub const MAX_RELEASE_BYTES: usize = 32 << 10;

/// Largest signed release record (statement, key and signature).
pub const MAX_SIGNED_RELEASE_BYTES: usize = MAX_RELEASE_BYTES + 128;

/// Most releases one store index may hold.
pub const MAX_INDEX_RELEASES: usize = 100_000;
