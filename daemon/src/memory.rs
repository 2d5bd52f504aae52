//! Process-wide memory settings, applied once at start.
//!
//! glibc's malloc gives each thread that allocates concurrently an arena of
//! its own, up to eight per core, and an arena keeps the memory freed into
//! it. A node's threads (tokio's workers and the blocking pool that reads,
//! verifies and writes pieces) would each keep megabytes that way: with 50
//! peers fetching from one seeder that was 5 to 10 MiB of its resident
//! memory. Two arenas are enough for a node, whose hot paths hardly
//! allocate (answer buffers are recycled, see `node::buffers`).

/// Most malloc arenas.
pub const MALLOC_ARENAS: i32 = 2;

/// Limits glibc's malloc arenas to [`MALLOC_ARENAS`] (elsewhere: nothing).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    set_arena_max();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max() {
    // SAFETY: mallopt takes two integers and changes a malloc setting; it
    // is called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}
