//! Figures for the report (run with `--release -- --ignored --nocapture`):
//! a 1 GiB sequential read over WebDAV on loopback against reading the
//! file directly, and a PROPFIND depth 1 of a 10k-entry directory. Not a
//! pass/fail test: timings depend on the machine.

use std::fs;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use metafuse_bytes::ByteSources;
use metafuse_rules::Rules;
use metafuse_state::FetchedValue;
use metafuse_vfs::{Library, SharedLibrary};
use metafuse_webdav::{WebdavAuth, WebdavServer};

const GIB: usize = 1 << 30;

fn apply(library: &SharedLibrary, values: &[(String, &str, String)]) {
    library.apply_batch(
        values
            .iter()
            .map(|(hash_id, property, value)| FetchedValue {
                hash_id,
                property,
                value: Some(value.as_str()),
            }),
    );
}

fn movie(hash_id: &str, title: &str, size: usize) -> Vec<(String, &'static str, String)> {
    vec![
        (
            hash_id.to_owned(),
            "filePath",
            format!("incoming/{hash_id}.mkv"),
        ),
        (hash_id.to_owned(), "size", size.to_string()),
        (hash_id.to_owned(), "mtime", "1700000000000".to_owned()),
        (hash_id.to_owned(), "title", title.to_owned()),
        (hash_id.to_owned(), "movieYear", "2000".to_owned()),
    ]
}

#[test]
#[ignore = "benchmark: run explicitly in release"]
fn webdav_throughput_and_propfind_of_10k_entries() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let sources = tempfile::tempdir().expect("sources");
    fs::create_dir_all(sources.path().join("incoming")).expect("dir");
    let big_path = sources.path().join("incoming/0000000000000000.mkv");
    {
        let mut file = fs::File::create(&big_path).expect("big file");
        let block: Vec<u8> = (0..1 << 20)
            .map(|index: u32| (index * 31 % 251) as u8)
            .collect();
        for _ in 0..GIB / block.len() {
            file.write_all(&block).expect("write");
        }
    }
    let rules = Arc::new(Rules::preset("default").expect("default preset"));
    let library = SharedLibrary::new(Library::new(rules));
    apply(&library, &movie("0000000000000000", "Big", GIB));
    for index in 1..=10_000 {
        apply(
            &library,
            &movie(&format!("{index:016x}"), &format!("Movie {index}"), 1000),
        );
    }
    let byte_sources = ByteSources::new(sources.path(), None).expect("sources");
    let server = Arc::new(WebdavServer::new(
        library.clone(),
        byte_sources,
        WebdavAuth::NoAuth,
        "",
    ));
    let address = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(metafuse_webdav::serve(
            listener,
            server,
            std::future::pending(),
        ));
        address
    });

    // Direct read (warm page cache, like the WebDAV read after it).
    let mut buffer = vec![0u8; 1 << 20];
    for round in 0..2 {
        let started = Instant::now();
        let mut file = fs::File::open(&big_path).expect("open");
        let mut total = 0;
        loop {
            let n_read = file.read(&mut buffer).expect("read");
            if n_read == 0 {
                break;
            }
            total += n_read;
        }
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(total, GIB);
        println!("direct read round {round}: {:.0} MiB/s", 1024.0 / seconds);
    }
    let big_url = {
        let library = library.read();
        let ino = library
            .tree()
            .file_by_hash("0000000000000000")
            .expect("big")
            .ino();
        let path = library.tree().path_of(ino).expect("path");
        format!(
            "http://{address}{}",
            path.replace(' ', "%20")
                .replace('(', "%28")
                .replace(')', "%29")
        )
    };
    for round in 0..2 {
        let started = Instant::now();
        let output = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}", &big_url])
            .output()
            .expect("curl");
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(String::from_utf8_lossy(&output.stdout), GIB.to_string());
        println!("webdav GET round {round}: {:.0} MiB/s", 1024.0 / seconds);
    }
    for round in 0..3 {
        let started = Instant::now();
        let output = Command::new("curl")
            .args([
                "-sS",
                "-X",
                "PROPFIND",
                "-H",
                "Depth: 1",
                &format!("http://{address}/Movies/"),
            ])
            .output()
            .expect("curl");
        let seconds = started.elapsed().as_secs_f64();
        let n_responses = String::from_utf8_lossy(&output.stdout)
            .matches("<D:response>")
            .count();
        assert_eq!(n_responses, 10_002);
        println!(
            "PROPFIND depth 1 of {} entries round {round}: {:.0} ms, {} KiB",
            n_responses - 1,
            seconds * 1000.0,
            output.stdout.len() / 1024
        );
    }
}
