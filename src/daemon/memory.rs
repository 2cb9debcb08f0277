//! Handing freed memory back to the system. glibc's allocator keeps the memory a program frees
//! for its next allocations; it returns some at the top of the heap on its own, but not the
//! free space between chunks still in use. Start-up peaks far above what the daemon then holds
//! (the configuration parsed as a YAML tree, a thousand first fetches with their TLS buffers),
//! and a reload parses a configuration again, so after each tokend asks the allocator to give
//! back every free page (`malloc_trim`). Measured in BENCHMARKS.md ("Scale").

/// Returns the allocator's free pages to the system. It walks the heap: call it off the
/// runtime's threads, after a peak (start-up, a reload), not on a hot path.
#[allow(unsafe_code)]
pub fn release_free() {
    // SAFETY: `malloc_trim` takes a byte count and no pointer; it only rearranges glibc's own
    // heap under glibc's own arena locks, so it is safe from any thread at any time, whatever
    // other threads are allocating (glibc manual, "Efficiency and Malloc"; malloc/malloc.c).
    unsafe {
        libc::malloc_trim(0);
    }
}
