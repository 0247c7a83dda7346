//! A process that dies without unmounting (SIGKILL) must not leave a dead
//! mount ("Transport endpoint is not connected") behind. The test runs
//! this test binary again as the child that mounts.

mod support;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use metafuse_testkit::{MountingChild, is_mounted};
use support::Fixture;

/// Set (to the mountpoint) only in the re-executed child.
const CHILD_MOUNTPOINT_VARIABLE: &str = "METAFUSE_FUSE_TEST_CHILD_MOUNTPOINT";
const CHILD_READY_LINE: &str = "metafuse-test-child: mounted";
/// Only a guard against a watcher that never acts; the wait itself ends on
/// the mount-table change event.
const UNMOUNT_DEADLINE: Duration = Duration::from_secs(30);

/// Not a test of its own: the child that `a_killed_process_leaves_no_dead_mount`
/// starts (with `--ignored`). Mounts the test library on the given
/// mountpoint, says so, then blocks until killed (or until the parent
/// closes stdin, then unmounts cleanly).
#[test]
#[ignore = "helper: runs only as the child of a_killed_process_leaves_no_dead_mount"]
fn child_mounts_and_blocks_until_killed() {
    let mountpoint = std::env::var_os(CHILD_MOUNTPOINT_VARIABLE).unwrap_or_else(|| {
        panic!("run only as the child of a_killed_process_leaves_no_dead_mount, which sets {CHILD_MOUNTPOINT_VARIABLE}")
    });
    let mut fixture = Fixture::new(&support::library_files());
    fixture.mountpoint = tempfile::TempDir::new().expect("placeholder");
    let handle = fixture.mount_with(|options| options.mountpoint = PathBuf::from(&mountpoint));
    assert!(handle.auto_unmount(), "watcher started");
    println!("{CHILD_READY_LINE}");
    let _ = io::stdin().read_to_end(&mut Vec::new());
    handle.unmount().expect("unmount");
}

/// Blocks until the mount table of this namespace changes after `mounts`
/// was opened, or `timeout` passes.
#[allow(unsafe_code)]
fn wait_for_mount_table_change(mounts: &File, timeout: Duration) {
    let mut poll_fd = libc::pollfd {
        fd: mounts.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, borrowed for the duration of the call.
    unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
}

/// Whether `mountpoint` left the mount table before `deadline`.
fn await_unmounted(mountpoint: &Path, deadline: Instant) -> bool {
    loop {
        // Opening first makes any change after the check wake the poll.
        let mounts = File::open("/proc/self/mounts").expect("mounts");
        if !is_mounted(mountpoint) {
            return true;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return false;
        }
        wait_for_mount_table_change(&mounts, remaining);
    }
}

#[test]
fn a_killed_process_leaves_no_dead_mount() {
    metafuse_testkit::require_fuse!();
    let mountpoint_directory = tempfile::tempdir().expect("mountpoint");
    let mountpoint = mountpoint_directory.path().to_path_buf();
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_mounts_and_blocks_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MOUNTPOINT_VARIABLE, &mountpoint)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let mut cleanup = MountingChild::new(child, &mountpoint);
    let stdout = cleanup.child.stdout.take().expect("child stdout");
    let mounted = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest prints the test name first, on the same line.
        .any(|line| line.ends_with(CHILD_READY_LINE));
    assert!(mounted, "the child exited before mounting");
    assert!(is_mounted(&mountpoint));
    assert!(
        fs::read_dir(&mountpoint).expect("list").count() > 0,
        "the child serves the library"
    );

    cleanup.child.kill().expect("SIGKILL");
    cleanup.child.wait().expect("reap");
    assert!(
        await_unmounted(&mountpoint, Instant::now() + UNMOUNT_DEADLINE),
        "{mountpoint:?} still mounted after its process was killed"
    );
    assert_eq!(
        fs::read_dir(&mountpoint)
            .expect("plain directory again")
            .count(),
        0
    );
}
