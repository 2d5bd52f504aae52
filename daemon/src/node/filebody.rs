//! An answer's raw pieces read from their files while the answer is
//! written ([`FileBody`]): [`CHUNK`] bytes at a time, into one buffer,
//! just before the chunk goes to the connection.
//!
//! A prepared answer waits for its turn behind others (a peer has up to
//! [`PER_PEER`](super::uploads::PER_PEER) in preparation), so a megabyte
//! read when the request came has left the CPU's caches by the time it is
//! written: the read into it and the copy out of it into the stream's
//! frames both went to memory, and cost a seeder more than anything but
//! the cipher (docs/PERF.md, issue 17). A chunk read right before it is
//! written is copied out while it is still in the cache, and the answers
//! waiting hold no buffers.
//!
//! A chunk in the page cache is read on the node's thread
//! ([`FileBody::read_cached`], never waiting); one that is not is read on
//! the blocking pool ([`FileBody::read_waiting`]), after the writer has
//! given up its upload turn, so a slow disk holds up neither the node's
//! connections nor the other answers. (One such read at a time per body,
//! and at most [`MAX_OPEN`] bodies exist: each holds a file.)
//!
//! Open files are a resource too: a body shares one open file among its
//! pieces of the same blob, and all bodies together hold at most
//! [`MAX_OPEN`] files ([`FileBody::new`] refuses more, and the answer is
//! read into memory instead), so that peers who ask and never read cannot
//! run the node out of file descriptors.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::nowait;

/// Most bytes read at a time: what is read stays in the CPU's cache
/// until it is copied into the stream's frames (64 KiB measured best of
/// 16–256 KiB, docs/PERF.md).
pub const CHUNK: usize = 64 * 1024;

/// Most files all bodies hold open at once.
pub const MAX_OPEN: usize = 128;

/// Files held open by bodies now.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Byte ranges of files, one after the other: an answer's pieces.
#[derive(Debug)]
pub struct FileBody {
    parts: Vec<Part>,
    len: usize,
    /// Files this body counts in [`OPEN`].
    files: usize,
}

#[derive(Debug)]
struct Part {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

impl FileBody {
    /// The ranges `(path, file, offset, len)`, one file kept open per
    /// path; `None` when that would take the bodies past [`MAX_OPEN`]
    /// open files.
    pub fn new(ranges: Vec<(PathBuf, File, u64, usize)>) -> Option<FileBody> {
        let mut opened: Vec<(PathBuf, Arc<File>)> = Vec::new();
        let mut parts = Vec::with_capacity(ranges.len());
        for (path, file, offset, len) in ranges {
            let file = match opened.iter().find(|(p, _)| *p == path) {
                Some((_, f)) => Arc::clone(f),
                None => {
                    let f = Arc::new(file);
                    opened.push((path, Arc::clone(&f)));
                    f
                }
            };
            parts.push(Part { file, offset, len });
        }
        let files = opened.len();
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n + files <= MAX_OPEN).then_some(n + files)
        })
        .ok()?;
        let len = parts.iter().map(|p| p.len).sum();
        Some(FileBody { parts, len, files })
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Reads into `buf` (replacing what it held) the [`CHUNK`] from `at`,
    /// or less at the end of the piece `at` is in, if the page cache holds
    /// it (`Ok(true)`); `Ok(false)` leaves `buf` empty: the read would
    /// wait on the disk. A file shorter than its range is an error
    /// (`UnexpectedEof`), never bytes that were not read.
    pub fn read_cached(&self, at: usize, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        let (file, offset, n) = self.chunk_at(at)?;
        nowait::read_cached(file, offset, n, buf)
    }

    /// Reads the chunk from `at` as [`FileBody::read_cached`] does, on the
    /// blocking pool, waiting on the disk if need be.
    pub async fn read_waiting(&self, at: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        let (file, offset, n) = self.chunk_at(at)?;
        let file = Arc::clone(file);
        let mut owned = std::mem::take(buf);
        owned.clear();
        // Allocated here, not in the pool thread's own malloc arena.
        owned.reserve(n);
        *buf = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            owned.resize(n, 0);
            file.read_exact_at(&mut owned, offset).map(|()| owned)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }

    /// The file, offset and length of the chunk from `at`.
    fn chunk_at(&self, at: usize) -> io::Result<(&Arc<File>, u64, usize)> {
        let mut start = 0;
        for p in &self.parts {
            if at < start + p.len {
                let within = at - start;
                return Ok((
                    &p.file,
                    p.offset + within as u64,
                    (p.len - within).min(CHUNK),
                ));
            }
            start += p.len;
        }
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        OPEN.fetch_sub(self.files, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(dir: &std::path::Path, files: &[(&[u8], u64, usize)]) -> FileBody {
        let ranges = files.iter().enumerate().map(|(i, (bytes, offset, len))| {
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, bytes).unwrap();
            (path.clone(), File::open(&path).unwrap(), *offset, *len)
        });
        FileBody::new(ranges.collect()).unwrap()
    }

    /// The whole body, each chunk read from the cache when it can be.
    async fn read_all(body: &FileBody) -> io::Result<Vec<u8>> {
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while out.len() < body.len() {
            if !body.read_cached(out.len(), &mut buf)? {
                body.read_waiting(out.len(), &mut buf).await?;
            }
            assert!(!buf.is_empty() && buf.len() <= CHUNK);
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn reads_the_ranges_one_after_the_other_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let body = body(dir.path(), &[(&a, 1000, 199_000), (&b, 0, 3000)]);
        assert_eq!(body.len(), 202_000);
        let mut want = a[1000..].to_vec();
        want.extend_from_slice(&b);
        assert_eq!(read_all(&body).await.unwrap(), want);
        // A chunk stops at the end of its piece, and reads the same from
        // the pool.
        let (mut cached, mut waited) = (Vec::new(), Vec::new());
        body.read_waiting(198_990, &mut waited).await.unwrap();
        assert_eq!(waited, a[199_990..]);
        if body.read_cached(198_990, &mut cached).unwrap() {
            assert_eq!(cached, waited);
        }
        // Past the end there is nothing to read.
        let err = body.read_waiting(202_000, &mut waited).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_not_made_up_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let body = body(dir.path(), &[(&[9u8; 100], 50, 100)]);
        let err = read_all(&body).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A chunk dropped from the page cache is refused by `read_cached`
    /// and read, the same, by `read_waiting`.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn chunks_not_in_the_page_cache_are_read_in_the_pool() {
        // In the crate's folder: a disk-backed filesystem on CI and
        // developers' machines (tmpfs under /tmp keeps every page).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
        let path = dir.path().join("blob");
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        file.sync_all().unwrap();
        let fs = rustix::fs::fstatfs(&file).unwrap().f_type as u64;
        let body = FileBody::new(vec![(path, file, 0, bytes.len())]).unwrap();
        let mut buf = Vec::new();
        let cached = nowait::drop_from_cache(&body.parts[0].file, || {
            body.read_cached(0, &mut buf).unwrap()
        });
        // tmpfs and overlay keep their pages whatever the advice.
        if ![0x0102_1994, 0x794c_7630].contains(&fs) {
            assert!(!cached, "a chunk just dropped from the cache read at once");
            assert!(buf.is_empty());
        }
        body.read_waiting(0, &mut buf).await.unwrap();
        assert_eq!(buf, bytes[..CHUNK]);
        assert_eq!(read_all(&body).await.unwrap(), bytes);
    }

    #[test]
    fn bodies_share_a_blob_s_file_and_hold_at_most_max_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, [1u8; 10]).unwrap();
        let range = |offset| (path.clone(), File::open(&path).unwrap(), offset, 5);
        // Other tests hold bodies at the same time: count from here.
        let before = OPEN.load(Ordering::Acquire);
        let one = FileBody::new(vec![range(0), range(5), range(0)]).unwrap();
        assert_eq!((one.files, one.len()), (1, 15));
        let mut held = vec![one];
        while let Some(b) = FileBody::new(vec![range(0)]) {
            held.push(b);
            assert!(held.len() <= MAX_OPEN, "more than MAX_OPEN files held");
        }
        assert!(OPEN.load(Ordering::Acquire) <= MAX_OPEN);
        // (Other tests hold a few at most.)
        assert!(held.len() >= MAX_OPEN.saturating_sub(before) / 2);
        held.clear();
        assert!(
            FileBody::new(vec![range(0)]).is_some(),
            "dropped bodies give their files back"
        );
    }
}
