//! Benchmark helper (not a test): mounts a synthetic library and times
//! `find` over it and a sequential `dd` of a large file, through the mount
//! and directly.
//!
//! `cargo run --release -p metafuse-fuse --example mount_bench -- [n_files] [big_file_mib]`

use std::fs;
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use metafuse_fuse::{MountOptions, mount};
use metafuse_rules::Rules;
use metafuse_state::FetchedValue;
use metafuse_vfs::{Library, SharedLibrary};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n_files: usize = args.next().map_or(Ok(100_000), |text| text.parse())?;
    let big_file_mib: usize = args.next().map_or(Ok(1024), |text| text.parse())?;
    let source_root = tempfile::tempdir()?;
    let mountpoint = tempfile::tempdir()?;

    let big_source = source_root.path().join("big.mkv");
    let mut big = fs::File::create(&big_source)?;
    let chunk: Vec<u8> = (0..1 << 20).map(|index: u32| (index % 251) as u8).collect();
    for _ in 0..big_file_mib {
        big.write_all(&chunk)?;
    }
    drop(big);

    let library = SharedLibrary::new(Library::new(Arc::new(Rules::preset("default")?)));
    let started = Instant::now();
    let big_size = (big_file_mib << 20).to_string();
    let mut owned = Vec::with_capacity(n_files * 6);
    for index in 0..n_files {
        let hash_id = format!("{index:016x}");
        let show = format!("Show {}", index / 500);
        owned.push((hash_id.clone(), "filePath", "big.mkv".to_owned()));
        owned.push((hash_id.clone(), "title", show));
        owned.push((hash_id.clone(), "season", (index / 50 % 10 + 1).to_string()));
        owned.push((hash_id.clone(), "episode", (index % 50 + 1).to_string()));
        owned.push((hash_id.clone(), "size", big_size.clone()));
        owned.push((hash_id, "mtime", "1700000000000".to_owned()));
    }
    for batch in owned.chunks(60_000) {
        library.apply_batch(batch.iter().map(|(hash_id, property, value)| FetchedValue {
            hash_id,
            property,
            value: Some(value),
        }));
    }
    let (n_visible, n_directories) = {
        let reader = library.read();
        (reader.file_count(), reader.directory_count())
    };
    println!(
        "library: {n_visible} files, {n_directories} directories, built in {:?}",
        started.elapsed()
    );
    let some_file = library.read().file_paths()[0].clone();

    for passthrough in [false, true] {
        let mut options = MountOptions::new(mountpoint.path(), source_root.path());
        options.passthrough = passthrough;
        let handle = mount(library.clone(), options)?;
        for run in ["cold (fresh mount)", "warm"] {
            let started = Instant::now();
            let output = Command::new("find").arg(mountpoint.path()).output()?;
            let n_lines = output.stdout.iter().filter(|byte| **byte == b'\n').count();
            println!(
                "passthrough={passthrough} find {run}: {n_lines} entries in {:?}",
                started.elapsed()
            );
        }
        let through_mount = mountpoint.path().join(some_file.trim_start_matches('/'));
        for (label, path) in [("direct", &big_source), ("through mount", &through_mount)] {
            let output = Command::new("dd")
                .arg(format!("if={}", path.display()))
                .args(["of=/dev/null", "bs=1M"])
                .output()?;
            let summary = String::from_utf8_lossy(&output.stderr);
            println!(
                "passthrough={passthrough} (active: {}) dd {label}: {}",
                handle.passthrough_active(),
                summary.lines().last().unwrap_or("")
            );
        }
        handle.unmount()?;
    }
    Ok(())
}
