//! An answer's raw pieces read from their files while the answer is
//! written ([`FileBody`]): a chunk at a time, into one buffer, just before
//! the chunk goes to the connection.
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
//! A chunk in the page cache is read on the node's thread ([`nowait`]);
//! one that would wait on the disk is read on the blocking pool, so the
//! node's connections never wait on a slow disk. (Such an answer holds
//! its turn meanwhile; it is rare: an answer is read from its files only
//! when its pieces' samples were in the page cache as it was made.)

use std::fs::File;
use std::io;
use std::sync::Arc;

use super::nowait;

/// Byte ranges of files, one after the other: an answer's pieces.
#[derive(Debug, Default)]
pub struct FileBody {
    parts: Vec<Part>,
    len: usize,
}

#[derive(Debug)]
struct Part {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

impl FileBody {
    /// Adds the `len` bytes of `file` at `offset`.
    pub fn push(&mut self, file: File, offset: u64, len: usize) {
        self.parts.push(Part {
            file: Arc::new(file),
            offset,
            len,
        });
        self.len += len;
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Reads into `buf` (replacing what it held) the body's bytes from
    /// `at`: at most `max`, and not past the end of the piece `at` is in.
    /// A file shorter than its range is an error (`UnexpectedEof`), never
    /// bytes that were not read.
    pub async fn read(&self, at: usize, max: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let mut start = 0;
        let Some((part, within)) = self.parts.iter().find_map(|p| {
            let found = (at < start + p.len).then(|| (p, at - start));
            start += p.len;
            found
        }) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let n = (part.len - within).min(max);
        let offset = part.offset + within as u64;
        if nowait::read_cached(&part.file, offset, n, buf)? {
            return Ok(());
        }
        let file = Arc::clone(&part.file);
        let mut owned = std::mem::take(buf);
        *buf = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt as _;
            owned.resize(n, 0);
            file.read_exact_at(&mut owned, offset).map(|()| owned)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(dir: &std::path::Path, files: &[(&[u8], u64, usize)]) -> FileBody {
        let mut body = FileBody::default();
        for (i, (bytes, offset, len)) in files.iter().enumerate() {
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, bytes).unwrap();
            body.push(File::open(&path).unwrap(), *offset, *len);
        }
        body
    }

    async fn read_all(body: &FileBody, chunk: usize) -> io::Result<Vec<u8>> {
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        while out.len() < body.len() {
            body.read(out.len(), chunk, &mut buf).await?;
            assert!(!buf.is_empty() && buf.len() <= chunk);
            out.extend_from_slice(&buf);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn reads_the_ranges_one_after_the_other_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let body = body(dir.path(), &[(&a, 1000, 4000), (&b, 0, 3000)]);
        assert_eq!(body.len(), 7000);
        let mut want = a[1000..].to_vec();
        want.extend_from_slice(&b);
        for chunk in [1, 999, 4000, 1 << 20] {
            assert_eq!(read_all(&body, chunk).await.unwrap(), want, "chunk {chunk}");
        }
        // A read stops at the end of its piece.
        let mut buf = Vec::new();
        body.read(3990, 100, &mut buf).await.unwrap();
        assert_eq!(buf, a[4990..]);
        // Past the end there is nothing to read.
        let err = body.read(7000, 10, &mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_is_an_error_not_made_up_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let body = body(dir.path(), &[(&[9u8; 100], 50, 100)]);
        let err = read_all(&body, 64).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
