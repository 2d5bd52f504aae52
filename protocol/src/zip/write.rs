//! Deterministic zips: the same bundle always gives byte-identical bytes,
//! and so the same SHA-256, which is what the Capgo plugin checks.
//!
//! Entries are the manifest's files in its (sorted) order, with no
//! directory entries, every timestamp 1980-01-01 00:00:00 (the zip epoch),
//! mode 0644, deflate at a fixed level ([`BUNDLE_LEVEL`] for bundle zips)
//! or stored for incompressible content, no extra fields. The deflate bytes come
//! from the zlib-rs version locked in `Cargo.lock`.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::PathBuf;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Deflate level of bundle zips: what devices download, so size counts.
pub const BUNDLE_LEVEL: i64 = 6;
/// Deflate level of release files: written once, carried on a stick, so
/// speed counts more than the last few percent of size.
pub const RELEASE_FILE_LEVEL: i64 = 1;

/// Options of every entry of a deterministic zip at deflate `level`.
pub fn entry_options(level: i64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(level))
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644)
        .large_file(false)
}

/// Bytes of each file tried for compressibility.
const SAMPLE: usize = 16 << 10;

/// Deflate, unless the file's first bytes do not shrink by 10 % at level 1
/// (images, video, fonts, archives): those are stored as they are, which
/// is as small and several times faster. Depends only on the content, so
/// the zip stays deterministic.
fn options_for(head: &[u8], level: i64) -> SimpleFileOptions {
    use flate2::Compression;
    use flate2::write::DeflateEncoder;
    if head.len() >= 4096 {
        let mut enc = DeflateEncoder::new(Vec::with_capacity(head.len()), Compression::fast());
        let small = enc
            .write_all(head)
            .and_then(|_| enc.finish())
            .map(|out| out.len() * 10 < head.len() * 9)
            .unwrap_or(true);
        if !small {
            return entry_options(level)
                .compression_method(CompressionMethod::Stored)
                .compression_level(None);
        }
    }
    entry_options(level)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where an entry's bytes come from.
pub enum Source {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file, streamed.
    File(PathBuf),
}

/// Writes `entries` in order, each with [`entry_options`] at `level`, and
/// `comment`.
pub fn write_zip<W: Write + Seek>(
    out: W,
    entries: impl IntoIterator<Item = (String, Source)>,
    level: i64,
    comment: Option<&str>,
) -> zip::result::ZipResult<W> {
    let mut zip = ZipWriter::new(out);
    let mut head = vec![0u8; SAMPLE];
    for (name, source) in entries {
        match source {
            Source::Bytes(bytes) => {
                let opts = options_for(&bytes[..bytes.len().min(SAMPLE)], level);
                zip.start_file(name, opts)?;
                zip.write_all(&bytes)?;
            }
            Source::File(path) => {
                let mut file = File::open(&path)?;
                let large = file.metadata()?.len() >= u64::from(u32::MAX);
                let n = read_up_to(&mut file, &mut head)?;
                zip.start_file(name, options_for(&head[..n], level).large_file(large))?;
                zip.write_all(&head[..n])?;
                std::io::copy(&mut file, &mut zip)?;
            }
        }
    }
    if let Some(c) = comment {
        zip.set_comment(c)?;
    }
    zip.finish()
}
