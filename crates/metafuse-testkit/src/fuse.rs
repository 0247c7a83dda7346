//! Whether this machine can run the FUSE tests, so that a test where it
//! cannot says why and skips instead of failing with a mount error.

use std::fs::OpenOptions;
use std::path::Path;

/// Set (to anything but `0`) where FUSE must work, e.g. in CI: then a test
/// that would skip fails instead, so a lost `/dev/fuse` cannot turn the
/// mount tests into silent passes.
pub const REQUIRE_FUSE_VARIABLE: &str = "METAFUSE_REQUIRE_FUSE";

/// Why the FUSE tests cannot run here, or `None` when they can: they need
/// `/dev/fuse` to open read-write and root (the mounts are made directly,
/// passthrough reads and `allow_other` need the privilege).
pub fn fuse_unavailable() -> Option<String> {
    let device = Path::new("/dev/fuse");
    if let Err(error) = OpenOptions::new().read(true).write(true).open(device) {
        return Some(format!(
            "{} cannot be opened ({error}); load the fuse module (modprobe fuse) or give the container the device",
            device.display()
        ));
    }
    match effective_uid() {
        Some(0) => None,
        Some(uid) => Some(format!("the FUSE tests need root; running as uid {uid}")),
        None => Some("cannot tell the effective uid from /proc/self/status".to_owned()),
    }
}

/// Whether [`REQUIRE_FUSE_VARIABLE`] asks for FUSE tests never to skip.
pub fn fuse_required() -> bool {
    std::env::var_os(REQUIRE_FUSE_VARIABLE).is_some_and(|value| value != "0" && !value.is_empty())
}

/// Says on the real stderr (libtest captures `eprintln!` of passing tests,
/// and a skip must be seen) which test skipped and why.
pub fn report_fuse_skip(reason: &str) {
    use std::io::Write as _;
    let current = std::thread::current();
    // libtest names each test's thread after the test.
    let test = current.name().unwrap_or("a FUSE test");
    let _ = writeln!(std::io::stderr(), "skipped {test}: {reason}");
}

/// The effective uid, the second number of the `Uid:` line of
/// `/proc/self/status` (read there to keep `unsafe` out of the testkit).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// First statement of every test that mounts a FUSE filesystem: where FUSE
/// is unavailable, prints `skipped <test>: <reason>` (past the test
/// harness's capture) and returns from the
/// test (with the given value, for tests returning a `Result`) — unless
/// `METAFUSE_REQUIRE_FUSE` is set, then it fails with the reason.
///
/// ```
/// fn mounts_something() {
///     metafuse_testkit::require_fuse!();
///     // ... mount and check ...
/// }
/// fn mounts_and_returns() -> Result<(), String> {
///     metafuse_testkit::require_fuse!(Ok(()));
///     Ok(())
/// }
/// # mounts_something();
/// # let _ = mounts_and_returns();
/// ```
#[macro_export]
macro_rules! require_fuse {
    () => {
        $crate::require_fuse!(())
    };
    ($skipped:expr) => {
        if let Some(reason) = $crate::fuse_unavailable() {
            if $crate::fuse_required() {
                panic!(
                    "FUSE is unavailable but {} is set: {reason}",
                    $crate::REQUIRE_FUSE_VARIABLE
                );
            }
            $crate::report_fuse_skip(&reason);
            return $skipped;
        }
    };
}
