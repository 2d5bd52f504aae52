//! The process's CPU time (user + system, every thread), read from its
//! CPU-time clock (`CLOCK_PROCESS_CPUTIME_ID`, nanoseconds): what a
//! transfer cost the machine, logged with it ("transfer done", `cpu_secs`),
//! so that what a small kiosk pays per gigabyte can be read off its log.

/// CPU seconds this process has used so far, or `None` where the clock
/// cannot be read.
pub fn process_secs() -> Option<f64> {
    #[cfg(unix)]
    {
        read()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn read() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// CPU seconds used since `start` (a [`process_secs`] reading), if both
/// readings could be taken.
pub fn since(start: Option<f64>) -> Option<f64> {
    Some(process_secs()? - start?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The clock is the whole process's: tests running beside this one
    // add to it, so only what this thread does is asserted.
    #[test]
    fn work_shows_on_the_clock() {
        let start = process_secs();
        assert!(start.is_some(), "the CPU-time clock reads on this system");
        // Spin until the clock shows 5 ms (however much of the wall
        // clock a busy host takes for it), giving up after 10 s.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while since(start).unwrap() < 0.005 {
            assert!(t.elapsed().as_secs() < 10, "10 s of spinning never showed");
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert_eq!(since(None), None, "no start reading, no figure");
    }
}
