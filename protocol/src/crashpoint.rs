//! Crash points: named steps of durable writes where a crash test may kill
//! the process.
//!
//! Every step that changes the store on disk calls [`hit`] with the phase
//! it is in. Normally that is one relaxed atomic load. When the environment
//! variable `LANSEED_TEST_KILL_AT` is set to N > 0, the N-th step sends
//! SIGKILL to its own process, so a test can stop a real `lanseed` process
//! at exactly that point, as a power cut or `kill -9` would, and then check
//! what the store looks like. With `LANSEED_TEST_KILL_AT=0` each step is
//! only printed to stderr (`crashpoint N PHASE`), so a test can count them
//! and learn which phase each one belongs to.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms crash points.
pub const ENV: &str = "LANSEED_TEST_KILL_AT";

static TARGET: OnceLock<Option<u64>> = OnceLock::new();
static COUNT: AtomicU64 = AtomicU64::new(0);

/// Marks one durable step of `phase`; may not return when armed.
pub fn hit(phase: &'static str) {
    let Some(target) = *TARGET.get_or_init(|| std::env::var(ENV).ok()?.parse().ok()) else {
        return;
    };
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if target == 0 {
        eprintln!("crashpoint {n} {phase}");
    } else if n == target {
        eprintln!("crashpoint {n} {phase}: SIGKILL");
        #[cfg(unix)]
        {
            let me = rustix::process::getpid();
            let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        }
        std::process::abort();
    }
}
