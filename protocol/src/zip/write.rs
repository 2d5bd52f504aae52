//! Deterministic zips: the same bundle always gives byte-identical bytes,
//! and so the same SHA-256, which is what the Capgo plugin checks.
//!
//! Entries are the manifest's files in its (sorted) order, with no
//! directory entries, every timestamp 1980-01-01 00:00:00 (the zip epoch),
//! mode 0644, deflate at level 6, no extra fields. The deflate bytes come
//! from the zlib-rs version locked in `Cargo.lock`.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::PathBuf;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Options of every entry of a deterministic zip.
pub fn entry_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(6))
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644)
        .large_file(false)
}

/// Where an entry's bytes come from.
pub enum Source {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file, streamed.
    File(PathBuf),
}

/// Writes `entries` in order, each with [`entry_options`], and `comment`.
pub fn write_zip<W: Write + Seek>(
    out: W,
    entries: impl IntoIterator<Item = (String, Source)>,
    comment: Option<&str>,
) -> zip::result::ZipResult<W> {
    let mut zip = ZipWriter::new(out);
    for (name, source) in entries {
        match source {
            Source::Bytes(bytes) => {
                zip.start_file(name, entry_options())?;
                zip.write_all(&bytes)?;
            }
            Source::File(path) => {
                let mut file = File::open(&path)?;
                let large = file.metadata()?.len() >= u64::from(u32::MAX);
                zip.start_file(name, entry_options().large_file(large))?;
                std::io::copy(&mut file, &mut zip)?;
            }
        }
    }
    if let Some(c) = comment {
        zip.set_comment(c)?;
    }
    zip.finish()
}
