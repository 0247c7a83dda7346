//! Memory given back after bursts. glibc keeps what a burst of changes
//! freed (one arena per runtime thread) for reuse, so the process's RSS
//! stays at its peak for good: after 40k live additions to a 100k library
//! it kept ~40% more than it needed (docs/BENCHMARKS.md). A thread asks
//! glibc to return its free pages (`malloc_trim(0)`) every few seconds; it
//! costs a walk over the arenas (milliseconds) and nothing when there is
//! nothing to return.

use std::time::Duration;

/// How often free memory is handed back.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the trimming thread (glibc only; elsewhere nothing).
pub(crate) fn give_back_memory_when_idle() {
    #[cfg(target_env = "gnu")]
    {
        let started = std::thread::Builder::new()
            .name("malloc-trim".to_owned())
            .spawn(|| {
                loop {
                    std::thread::sleep(TRIM_INTERVAL);
                    trim();
                }
            });
        if let Err(error) = started {
            eprintln!("warning: memory will not be given back after bursts: {error}");
        }
    }
}

#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes glibc's own arena locks and touches no
    // memory of ours; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
