//! Process-wide memory settings of the edge binary.
//!
//! [`small_pages_only`] turns transparent huge pages (THP) off for the
//! process. Where the kernel's THP setting is `always` (the default of many
//! distributions), the allocator's arenas are backed by 2 MiB pages as soon
//! as they are touched, so a reconnect storm's short-lived allocations leave
//! whole huge pages resident around the long-lived per-connection state:
//! measured on 9,000 idle connections after a storm, 1.96–2.57 KB resident
//! per connection from run to run with THP, 1.78–1.84 KB without, for the
//! same 1.6 KB of live heap (`docs/decisions/0058-edge-small-pages.md`).
//! Databases and brokers that keep many small objects (Redis, MongoDB)
//! recommend the same for latency and memory.

/// Asks the kernel not to back this process's memory with transparent
/// huge pages from now on (`prctl(PR_SET_THP_DISABLE)`). Linux only; a
/// no-op elsewhere. Returns whether the setting is in force; a kernel that
/// refuses leaves the process as it was (the broker works either way).
pub fn small_pages_only() -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        nix::sys::prctl::set_thp_disable(true).is_ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// The flag is set for the process and reads back (Linux).
    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_off_after_the_call() {
        assert!(super::small_pages_only(), "prctl accepted");
        assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(true));
    }
}
