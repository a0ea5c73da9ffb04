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
    /// Resident memory of this process, in bytes.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    fn rss() -> u64 {
        std::fs::read_to_string("/proc/self/statm")
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 4096
    }

    /// Freed blocks in the middle of the heap (each followed by a small block still held,
    /// so none of them joins the top, which `free` trims by itself): the trim gives their
    /// pages back, and what is still held is intact. It measures resident memory, which
    /// is the whole process's, so it runs alone in a child process: the other tests of
    /// this binary, on their threads, would otherwise grow or shrink it meanwhile.
    /// x86_64 only: under qemu-user (the big-endian run) the resident memory read is the
    /// emulator's, not the program's.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    #[test]
    fn freed_memory_in_the_middle_of_the_heap_is_given_back() {
        const CHILD: &str = "HNAPI_HEAP_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return in_the_child();
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ffi::heap::tests::freed_memory_in_the_middle_of_the_heap_is_given_back",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    }

    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    fn in_the_child() {
        let start = rss();
        // 4096 blocks of 16 KiB (below mmap's threshold, so they live in the heap), each
        // followed by a small one that is kept.
        let mut blocks = Vec::with_capacity(4096);
        let mut kept = Vec::with_capacity(4096);
        for i in 0..4096usize {
            blocks.push(vec![(i % 251) as u8; 16 * 1024]);
            kept.push(vec![(i % 7) as u8; 64]);
        }
        for b in &mut blocks {
            b[100] = 1;
        }
        drop(blocks);
        let before = rss();
        assert!(
            before > start + 48 * 1024 * 1024,
            "RSS {start} at the start, {before} after freeing: the freed blocks were not held"
        );
        assert!(super::release_free_memory(), "nothing was given back");
        let after = rss();
        // Each 16 KiB hole has at least three whole pages inside it: 48 MiB of 64.
        assert!(
            after + 32 * 1024 * 1024 < before,
            "RSS {before} before the trim, {after} after: 64 MiB were freed"
        );
        assert!(
            kept.iter()
                .enumerate()
                .all(|(i, k)| k.iter().all(|&b| b == (i % 7) as u8))
        );
    }
}
