//! Giving freed memory back to the system, for the gateway (`server` feature, Linux with
//! glibc). glibc's malloc keeps what a burst of connections freed inside its heaps, where
//! only the top of each heap is returned by itself: a gateway that held 10,000
//! connections stayed at its peak after they closed. `malloc_trim(0)` walks every arena
//! and hands the free pages in the middle back too (madvise), at the cost of a walk over
//! the heap — so the gateway calls it only after many connections have closed
//! (`gate::server::give_back_memory`), never per transaction.

/// Returns the free pages of every malloc arena to the system; true when any was.
/// Elsewhere (musl, Windows, macOS) it does nothing and returns false.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            // glibc's <malloc.h>: int malloc_trim(size_t pad);
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena).
        unsafe { malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// A big freed block in the middle of the heap (a smaller one after it keeps it from
    /// being the top): the trim gives its pages back, and what is still held is intact.
    /// x86_64 only: under qemu-user (the big-endian run) the resident memory read is the
    /// emulator's, not the program's.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    #[test]
    fn freed_memory_in_the_middle_of_the_heap_is_given_back() {
        let rss = || {
            std::fs::read_to_string("/proc/self/statm")
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                * 4096
        };
        // Many small blocks (below mmap's threshold, so they live in the heap), then one
        // kept after them.
        let mut blocks: Vec<Vec<u8>> = (0..4096)
            .map(|i| vec![(i % 251) as u8; 16 * 1024])
            .collect();
        let kept = vec![7u8; 1024];
        for b in &mut blocks {
            b[100] = 1;
        }
        drop(blocks);
        let before = rss();
        assert!(super::release_free_memory(), "nothing was given back");
        let after = rss();
        assert!(
            after + 32 * 1024 * 1024 < before,
            "RSS {before} before the trim, {after} after: 64 MiB were freed"
        );
        assert!(kept.iter().all(|&b| b == 7));
    }
}
