//! Zips, read defensively and written deterministically.
//!
//! Bundles arrive as zips (the Capgo CLI's `bundle zip`, CI artefacts) and
//! leave as zips (what the Capgo-compatible gateway serves, release files
//! carried into offline sites). Zips are where update systems get broken
//! into, so [`read::SafeZip`] checks the whole central directory before a
//! byte is inflated, and counts every byte it inflates:
//!
//! - names: UTF-8, relative, no `..`, no backslash, no NUL or control
//!   character, no drive letter;
//! - kinds: regular files and directories only (no symlinks, devices,
//!   FIFOs), not encrypted, stored or deflated;
//! - collisions: no duplicate names, none equal after Unicode NFC
//!   normalization or case folding, no file that is also a folder;
//! - layout: no two entries overlapping in the archive;
//! - bombs: the bytes actually inflated are capped in total and, for large
//!   entries, relative to their compressed size; declared sizes are never
//!   trusted and never used to preallocate.
//!
//! [`write`] makes byte-identical zips from identical bundles.

pub mod read;
pub mod write;

pub use read::{Layout, SafeZip, ZipEntry};

/// Bounds on what a zip may expand to.
#[derive(Clone, Copy, Debug)]
pub struct ZipLimits {
    /// Most bytes all entries together may inflate to.
    pub max_total: u64,
    /// Most bytes an entry may inflate to per compressed byte, checked once
    /// it passes [`ZipLimits::ratio_floor`] bytes.
    pub max_ratio: u64,
    /// Entries smaller than this are not held to the ratio (a small file of
    /// spaces legitimately compresses 100-fold).
    pub ratio_floor: u64,
    /// Most entries.
    pub max_entries: usize,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_total: 1 << 30,
            max_ratio: 200,
            ratio_floor: 1 << 20,
            max_entries: crate::limits::MAX_FILES,
        }
    }
}

/// What is wrong with one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// The name is not UTF-8.
    #[error("its name is not valid UTF-8")]
    NotUtf8,
    /// An absolute path or a drive letter.
    #[error("it is an absolute path")]
    Absolute,
    /// A `..` component.
    #[error("it climbs out of the bundle with `..`")]
    DotDot,
    /// An empty or `.` component.
    #[error("it has an empty or `.` path component")]
    BadComponent,
    /// A backslash.
    #[error("it contains a backslash")]
    Backslash,
    /// A NUL byte.
    #[error("it contains a NUL byte")]
    Nul,
    /// Another control character.
    #[error("it contains a control character")]
    ControlCharacter,
    /// A path longer than the limit.
    #[error("its path is too long")]
    TooLong,
    /// A symbolic link.
    #[error("it is a symbolic link")]
    Symlink,
    /// Neither a regular file nor a directory.
    #[error("it is not a regular file or directory")]
    NotRegular,
    /// Encrypted.
    #[error("it is encrypted")]
    Encrypted,
    /// A compression method other than stored or deflate.
    #[error("it uses compression method {0}, not stored or deflate")]
    Compression(String),
    /// The same name twice.
    #[error("the name appears twice in the archive")]
    Duplicate,
    /// Equal to another name after case folding.
    #[error("it differs from `{0}` only by letter case")]
    CaseCollision(String),
    /// Equal to another name after Unicode normalization.
    #[error("it is the same name as `{0}` after Unicode normalization")]
    NormalizationCollision(String),
    /// A file that is also a folder of another entry.
    #[error("it is a file, but `{0}` uses it as a folder")]
    FileIsFolder(String),
    /// Overlaps another entry's bytes in the archive.
    #[error("its bytes overlap those of `{0}` in the archive")]
    Overlap(String),
    /// Inflated past the ratio limit.
    #[error("it inflates more than {0} times its compressed size (a zip bomb?)")]
    Ratio(u64),
    /// Inflated to another size than declared.
    #[error("it inflated to {actual} bytes but declares {declared}")]
    SizeMismatch {
        /// Declared size.
        declared: u64,
        /// Bytes inflated.
        actual: u64,
    },
    /// Its data is damaged (bad CRC or deflate stream).
    #[error("its data is damaged: {0}")]
    Corrupt(String),
    /// Its content is larger than the caller allows for it.
    #[error("it is larger than the {0} bytes allowed for it")]
    TooLarge(u64),
}

/// Why a zip was refused.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    /// Not a readable zip (truncated, damaged, or another format).
    #[error("{path} is not a readable zip archive: {reason}")]
    NotAZip {
        /// The file.
        path: String,
        /// What the reader said.
        reason: String,
    },
    /// One entry is refused.
    #[error("zip entry `{name}` is refused: {problem}")]
    Entry {
        /// The entry's name as stored (escaped for display).
        name: String,
        /// What is wrong.
        problem: EntryProblem,
    },
    /// Too many entries.
    #[error("the zip has {0} entries, more than the limit of {1}")]
    TooManyEntries(usize, usize),
    /// Inflating past the total cap.
    #[error(
        "the zip inflates to more than {0} bytes in all (a zip bomb?); raise the limit with --max-unzipped-size if it is genuine"
    )]
    TotalTooLarge(u64),
    /// No `index.html` at the root (or in the single top folder).
    #[error("the zip has no index.html at its root or in a single top-level folder")]
    NoIndexHtml,
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}
