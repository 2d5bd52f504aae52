//! The defensive zip reader (see the module above for what it refuses).
//!
//! [`SafeZip::open`] reads only the central directory and the local
//! headers, and refuses the archive with an error naming the first bad
//! entry before anything is inflated or written. [`SafeZip::read`] then
//! streams one entry at a time through a fixed buffer, counting the bytes
//! actually inflated against the limits. [`SafeZip::from_reader`] does the
//! same over any seekable reader, such as a zip held in memory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use unicode_normalization::UnicodeNormalization;
use zip::{CompressionMethod, ZipArchive};

use super::{EntryProblem, ZipError, ZipLimits};
use crate::limits::MAX_PATH_LEN;
use crate::path::BundlePath;

/// How entry names map to bundle paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A web build: `index.html` at the root, or everything inside one
    /// top-level folder that has it (that folder is flattened away, as
    /// Capgo does).
    Bundle,
    /// Names are taken as they are (release files).
    Raw,
}

/// One regular file of a checked zip.
#[derive(Clone, Debug)]
pub struct ZipEntry {
    /// The name as stored in the archive.
    pub name: String,
    /// Its path in the bundle (after flattening a top-level folder).
    pub path: BundlePath,
    /// The size the archive declares (not trusted).
    pub declared_size: u64,
    /// Its compressed size.
    pub compressed_size: u64,
    index: usize,
}

/// A zip whose central directory passed every check, read from `R` (a
/// buffered file unless made with [`SafeZip::from_reader`]).
pub struct SafeZip<R: Read + Seek = BufReader<File>> {
    archive: ZipArchive<R>,
    entries: Vec<ZipEntry>,
    limits: ZipLimits,
    inflated: u64,
}

fn refuse(name: &str, problem: EntryProblem) -> ZipError {
    ZipError::Entry {
        name: name.escape_debug().to_string(),
        problem,
    }
}

/// Checks one stored name; returns it as text without a trailing `/`.
fn check_name(raw: &[u8]) -> Result<String, (String, EntryProblem)> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let name = std::str::from_utf8(raw).map_err(|_| (shown.clone(), EntryProblem::NotUtf8))?;
    let bad = |p| Err((name.to_owned(), p));
    if name.contains('\0') {
        return bad(EntryProblem::Nul);
    }
    if name.contains('\\') {
        return bad(EntryProblem::Backslash);
    }
    if name.chars().any(char::is_control) {
        return bad(EntryProblem::ControlCharacter);
    }
    let b = name.as_bytes();
    if name.starts_with('/') || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic()) {
        return bad(EntryProblem::Absolute);
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    if trimmed.len() > MAX_PATH_LEN {
        return bad(EntryProblem::TooLong);
    }
    for component in trimmed.split('/') {
        match component {
            ".." => return bad(EntryProblem::DotDot),
            "" | "." => return bad(EntryProblem::BadComponent),
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

/// Metadata of one central-directory record, before any decision.
struct Raw {
    index: usize,
    name: String,
    is_dir: bool,
    declared_size: u64,
    compressed_size: u64,
    range: std::ops::Range<u64>,
}

impl SafeZip {
    /// Opens and checks `path`; nothing is inflated.
    pub fn open(path: &Path, limits: ZipLimits, layout: Layout) -> Result<SafeZip, ZipError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| ZipError::Io {
            path: shown.clone(),
            source,
        })?;
        SafeZip::from_reader(BufReader::new(file), &shown, limits, layout)
    }
}

impl<R: Read + Seek> SafeZip<R> {
    /// Checks the zip read from `reader` (a file, or bytes in a
    /// `std::io::Cursor`); nothing is inflated. `shown` names the zip in
    /// errors.
    pub fn from_reader(
        reader: R,
        shown: &str,
        limits: ZipLimits,
        layout: Layout,
    ) -> Result<SafeZip<R>, ZipError> {
        let shown = shown.to_owned();
        let mut archive = ZipArchive::new(reader).map_err(|e| ZipError::NotAZip {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if archive.len() > limits.max_entries {
            return Err(ZipError::TooManyEntries(archive.len(), limits.max_entries));
        }
        if archive.has_duplicate_names() {
            let name = find_duplicate(archive).unwrap_or_else(|| "?".into());
            return Err(refuse(&name, EntryProblem::Duplicate));
        }
        let mut raws = Vec::with_capacity(archive.len());
        for index in 0..archive.len() {
            let f = archive.by_index_raw(index).map_err(|e| ZipError::NotAZip {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            let name = check_name(f.name_raw()).map_err(|(n, p)| refuse(&n, p))?;
            if f.is_symlink() {
                return Err(refuse(&name, EntryProblem::Symlink));
            }
            let kind = f.unix_mode().map_or(0, |m| m & 0o170_000);
            let is_dir = f.is_dir();
            let regular = match kind {
                0 => true,
                0o100_000 => !is_dir,
                0o040_000 => is_dir,
                _ => false,
            };
            if !regular || (is_dir && f.size() > 0) {
                return Err(refuse(&name, EntryProblem::NotRegular));
            }
            if f.encrypted() {
                return Err(refuse(&name, EntryProblem::Encrypted));
            }
            if !matches!(
                f.compression(),
                CompressionMethod::Stored | CompressionMethod::Deflated
            ) {
                return Err(refuse(
                    &name,
                    EntryProblem::Compression(format!("{:?}", f.compression())),
                ));
            }
            let start = f.header_start();
            let end = f
                .data_start()
                .and_then(|d| d.checked_add(f.compressed_size()))
                .ok_or_else(|| ZipError::NotAZip {
                    path: shown.clone(),
                    reason: format!("entry `{name}` has no readable local header"),
                })?;
            raws.push(Raw {
                index,
                name,
                is_dir,
                declared_size: f.size(),
                compressed_size: f.compressed_size(),
                range: start..end,
            });
        }
        check_overlaps(&raws)?;
        check_collisions(&raws)?;

        let files: Vec<&Raw> = raws.iter().filter(|r| !r.is_dir).collect();
        let strip = match layout {
            Layout::Raw => String::new(),
            Layout::Bundle => bundle_prefix(&files)?,
        };
        let mut entries = Vec::with_capacity(files.len());
        let mut declared_total = 0u64;
        for r in files {
            let rel = &r.name[strip.len()..];
            let path =
                BundlePath::new(rel).map_err(|_| refuse(&r.name, EntryProblem::BadComponent))?;
            declared_total = declared_total.saturating_add(r.declared_size);
            entries.push(ZipEntry {
                name: r.name.clone(),
                path,
                declared_size: r.declared_size,
                compressed_size: r.compressed_size,
                index: r.index,
            });
        }
        if declared_total > limits.max_total {
            return Err(ZipError::TotalTooLarge(limits.max_total));
        }
        Ok(SafeZip {
            archive,
            entries,
            limits,
            inflated: 0,
        })
    }

    /// Lifts the ratio cap: for an archive whose entry sizes are already
    /// bounded by a signed manifest (release files), where a genuinely
    /// compressible large file must not look like a bomb. The total cap and
    /// per-entry maximums still apply.
    pub fn bounded_by_signed_sizes(&mut self) {
        self.limits.max_ratio = u64::MAX;
    }

    /// The regular files, in archive order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// Inflates entry `i` (an index into [`SafeZip::entries`]) into `sink`
    /// in chunks, refusing it past `max` bytes, past the ratio limit, past
    /// the archive's total, or when it ends at another size than declared
    /// or with a bad checksum. Returns the bytes inflated.
    pub fn read(
        &mut self,
        i: usize,
        max: Option<u64>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ZipError> {
        let entry = &self.entries[i];
        let name = entry.name.clone();
        let (declared, compressed) = (entry.declared_size, entry.compressed_size);
        let mut file = self
            .archive
            .by_index(entry.index)
            .map_err(|e| refuse(&name, EntryProblem::Corrupt(e.to_string())))?;
        let mut buf = vec![0u8; 64 << 10];
        let mut n_entry = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| refuse(&name, EntryProblem::Corrupt(e.to_string())))?;
            if n == 0 {
                break;
            }
            n_entry += n as u64;
            self.inflated += n as u64;
            if self.inflated > self.limits.max_total {
                return Err(ZipError::TotalTooLarge(self.limits.max_total));
            }
            if let Some(max) = max
                && n_entry > max
            {
                return Err(refuse(&name, EntryProblem::TooLarge(max)));
            }
            if n_entry > self.limits.ratio_floor
                && n_entry > self.limits.max_ratio.saturating_mul(compressed.max(1))
            {
                return Err(refuse(&name, EntryProblem::Ratio(self.limits.max_ratio)));
            }
            sink(&buf[..n]).map_err(|source| ZipError::Io {
                path: name.clone(),
                source,
            })?;
        }
        if n_entry != declared {
            return Err(refuse(
                &name,
                EntryProblem::SizeMismatch {
                    declared,
                    actual: n_entry,
                },
            ));
        }
        Ok(n_entry)
    }

    /// Inflates entry `i` into memory, at most `max` bytes.
    pub fn read_to_vec(&mut self, i: usize, max: u64) -> Result<Vec<u8>, ZipError> {
        let mut out = Vec::new();
        self.read(i, Some(max), &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }
}

fn check_overlaps(raws: &[Raw]) -> Result<(), ZipError> {
    let mut order: Vec<&Raw> = raws.iter().collect();
    order.sort_by_key(|r| (r.range.start, r.range.end));
    for pair in order.windows(2) {
        if pair[1].range.start < pair[0].range.end {
            return Err(refuse(
                &pair[1].name,
                EntryProblem::Overlap(pair[0].name.clone()),
            ));
        }
    }
    Ok(())
}

fn check_collisions(raws: &[Raw]) -> Result<(), ZipError> {
    let mut normalized: HashMap<String, &str> = HashMap::new();
    let mut folded: HashMap<String, &str> = HashMap::new();
    for r in raws {
        let nfc: String = r.name.nfc().collect();
        if let Some(other) = normalized.insert(nfc.clone(), &r.name) {
            // Equal bytes were caught as duplicates (a file and a folder
            // of the same name land here too).
            let problem = if other == r.name {
                EntryProblem::FileIsFolder(other.to_owned())
            } else {
                EntryProblem::NormalizationCollision(other.to_owned())
            };
            return Err(refuse(&r.name, problem));
        }
        if let Some(other) = folded.insert(nfc.to_lowercase(), &r.name) {
            return Err(refuse(
                &r.name,
                EntryProblem::CaseCollision(other.to_owned()),
            ));
        }
    }
    let files: HashSet<&str> = raws
        .iter()
        .filter(|r| !r.is_dir)
        .map(|r| r.name.as_str())
        .collect();
    for r in raws {
        let mut end = 0;
        while let Some(pos) = r.name[end..].find('/') {
            end += pos;
            if files.contains(&r.name[..end]) {
                return Err(refuse(
                    &r.name[..end],
                    EntryProblem::FileIsFolder(r.name.clone()),
                ));
            }
            end += 1;
        }
    }
    Ok(())
}

/// The top-level folder to flatten away, or "" when `index.html` is at the
/// root.
fn bundle_prefix(files: &[&Raw]) -> Result<String, ZipError> {
    if files.iter().any(|f| f.name == "index.html") {
        return Ok(String::new());
    }
    let mut tops = files
        .iter()
        .map(|f| f.name.split_once('/').map(|(top, _)| top));
    let Some(Some(top)) = tops.next() else {
        return Err(ZipError::NoIndexHtml);
    };
    let single = tops.all(|t| t == Some(top));
    let index = format!("{top}/index.html");
    if single && files.iter().any(|f| f.name == index) {
        Ok(format!("{top}/"))
    } else {
        Err(ZipError::NoIndexHtml)
    }
}

/// Names the first name that appears twice, by walking the central
/// directory records themselves (the zip crate keeps one entry per name).
fn find_duplicate<R: Read + Seek>(mut archive: ZipArchive<R>) -> Option<String> {
    let start = (0..archive.len())
        .filter_map(|i| {
            archive
                .by_index_raw(i)
                .ok()
                .map(|f| f.central_header_start())
        })
        .min()?;
    let mut r = archive.into_inner();
    r.seek(SeekFrom::Start(start)).ok()?;
    let mut seen = HashSet::new();
    loop {
        let mut head = [0u8; 46];
        r.read_exact(&mut head).ok()?;
        if head[..4] != [0x50, 0x4b, 0x01, 0x02] {
            return None;
        }
        let len = |at: usize| u64::from(u16::from_le_bytes([head[at], head[at + 1]]));
        let mut name = vec![0u8; len(28) as usize];
        r.read_exact(&mut name).ok()?;
        r.seek(SeekFrom::Current((len(30) + len(32)) as i64)).ok()?;
        let name = String::from_utf8_lossy(&name).into_owned();
        if !seen.insert(name.clone()) {
            return Some(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::zip::write::{BUNDLE_LEVEL, Source, write_zip};

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let entries = entries
            .iter()
            .map(|(name, data)| (name.to_string(), Source::Bytes(data.to_vec())));
        write_zip(Cursor::new(Vec::new()), entries, BUNDLE_LEVEL, None)
            .unwrap()
            .into_inner()
    }

    fn in_memory(bytes: &[u8], limits: ZipLimits) -> Result<SafeZip<Cursor<&[u8]>>, ZipError> {
        SafeZip::from_reader(Cursor::new(bytes), "test.zip", limits, Layout::Bundle)
    }

    #[test]
    fn reads_a_zip_held_in_memory() {
        let bytes = zip_of(&[
            ("dist/index.html", b"<!doctype html>"),
            ("dist/app.js", &[b'x'; 10_000]),
        ]);
        let mut z = in_memory(&bytes, ZipLimits::default()).unwrap();
        let paths: Vec<&str> = z.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["index.html", "app.js"],
            "the top folder is flattened"
        );
        assert_eq!(z.read_to_vec(0, 100).unwrap(), b"<!doctype html>");
        assert_eq!(z.read_to_vec(1, 10_000).unwrap(), [b'x'; 10_000]);
    }

    #[test]
    fn in_memory_zips_get_the_same_checks() {
        let bytes = zip_of(&[("index.html", b"i"), ("app.js", &[b'x'; 10_000])]);
        let mut z = in_memory(&bytes, ZipLimits::default()).unwrap();
        assert!(matches!(
            z.read_to_vec(1, 9_999),
            Err(ZipError::Entry {
                problem: EntryProblem::TooLarge(9_999),
                ..
            })
        ));
        let small_total = ZipLimits {
            max_total: 5_000,
            ..ZipLimits::default()
        };
        assert!(matches!(
            in_memory(&bytes, small_total),
            Err(ZipError::TotalTooLarge(5_000))
        ));
        for cut in [0, 1, 22, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(
                    in_memory(&bytes[..cut], ZipLimits::default()),
                    Err(ZipError::NotAZip { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn duplicates_are_named_from_the_in_memory_directory() {
        // Two names of one length, then the second renamed to the first in
        // its local and central headers.
        let mut bytes = zip_of(&[("index.html", b"i"), ("a.js", b"1"), ("b.js", b"2")]);
        let mut at = 0;
        while let Some(pos) = bytes[at..].windows(4).position(|w| w == b"b.js") {
            bytes[at + pos] = b'a';
            at += pos + 4;
        }
        match in_memory(&bytes, ZipLimits::default()) {
            Err(ZipError::Entry {
                name,
                problem: EntryProblem::Duplicate,
            }) => assert_eq!(name, "a.js"),
            other => panic!("expected a duplicate, got {:?}", other.err()),
        }
    }
}
