//! Reads that never wait on the disk: bytes already in the page cache are
//! copied at once, and a read that would have to wait says so instead
//! (Linux `preadv2` with `RWF_NOWAIT`).
//!
//! The server reads what is cached on the node's own thread, without a
//! trip through the blocking pool and back (two thread hand-offs per
//! answer, which on 2 vCPUs cost more than the read): a compression
//! sample, pieces that may compress, and the chunks of an answer read
//! from its files as it is written. A read that would wait on a slow disk
//! still goes to the pool, so that no cold read holds up the node's
//! connections.

use std::fs::File;
use std::io;

/// Appends the `len` bytes of `file` at `offset` to `out` if all of them
/// are in the page cache (`Ok(true)`); otherwise `out` is left as it was
/// and the answer is `Ok(false)`: the read would wait, or this system or
/// filesystem cannot tell. A file shorter than `offset + len` is an error.
pub fn read_cached(file: &File, offset: u64, len: usize, out: &mut Vec<u8>) -> io::Result<bool> {
    let start = out.len();
    out.reserve(len);
    let mut done = 0;
    while done < len {
        match read_nowait(
            file,
            offset + done as u64,
            &mut out.spare_capacity_mut()[..len - done],
        ) {
            Ok(0) => {
                out.truncate(start);
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` bytes of the
                // spare capacity, which holds `len - done >= n` bytes.
                #[allow(unsafe_code)]
                unsafe {
                    out.set_len(out.len() + n)
                };
                done += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if would_wait(&e) => {
                out.truncate(start);
                return Ok(false);
            }
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(true)
}

/// Whether `e` says "not without waiting" (or "cannot promise not to").
fn would_wait(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        e.kind() == io::ErrorKind::Unsupported
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn read_nowait(
    file: &File,
    offset: u64,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `iov` describes `buf`, writable memory of `buf.len()` bytes
    // that lives across the call; the kernel writes at most that many.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn read_nowait(_: &File, _: u64, _: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Advises the kernel to drop `file` from the page cache until `cached`
/// says it has, for up to a second (the advice is only advice: a page
/// still being written back, or locked by another reader, stays);
/// whether it is still cached. For the tests of what is not cached.
#[cfg(all(test, target_os = "linux"))]
pub fn drop_from_cache(file: &File, mut cached: impl FnMut() -> bool) -> bool {
    for _ in 0..20 {
        rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        if !cached() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file_with(dir: &std::path::Path, bytes: &[u8]) -> File {
        let path = dir.join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
        File::open(&path).unwrap()
    }

    #[test]
    fn cached_bytes_are_appended_and_a_short_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let f = file_with(dir.path(), &bytes);
        let mut out = b"head".to_vec();
        // Just written: in the page cache.
        if read_cached(&f, 1000, 200_000, &mut out).unwrap() {
            assert_eq!(&out[..4], b"head");
            assert_eq!(&out[4..], &bytes[1000..201_000]);
        } else {
            // A filesystem that cannot promise (e.g. an overlay): nothing
            // appended, and the caller reads in the blocking pool.
            assert_eq!(out, b"head");
        }
        let err = read_cached(&f, 200_000, 100_001, &mut out);
        assert!(err.is_err() || !err.unwrap(), "read past the end");
        assert!(out == b"head" || out.len() == 200_004);
    }

    /// A file dropped from the page cache is not read (it would wait).
    #[cfg(target_os = "linux")]
    #[test]
    fn bytes_not_in_the_page_cache_are_left_for_the_pool() {
        // In the crate's folder: a disk-backed filesystem on CI and
        // developers' machines (tmpfs under /tmp keeps every page).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let bytes = vec![5u8; 4 << 20];
        let f = file_with(dir.path(), &bytes);
        let mut out = Vec::new();
        let got = drop_from_cache(&f, || {
            out.clear();
            read_cached(&f, 0, bytes.len(), &mut out).unwrap()
        });
        let fs = rustix::fs::fstatfs(&f).unwrap().f_type as u64;
        // tmpfs and overlay keep their pages whatever the advice.
        if ![0x0102_1994, 0x794c_7630].contains(&fs) {
            assert!(!got, "4 MiB just dropped from the cache read at once");
        }
        assert!(if got { out == bytes } else { out.is_empty() });
    }
}
