//! Files whose source is not under the files root are read by HTTP range
//! requests from a WebDAV server: here a small HTTP/1.1 server in the test
//! that honours `Range`, keeps connections alive and counts them.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use metafuse_fuse::MountHandle;
use support::{Fixture, SourceFile, library_files, movie, walk};

/// How the test server answers a range request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseStyle {
    /// 206 with Content-Length and Content-Range.
    Ranged,
    /// 206 in chunked transfer encoding.
    Chunked,
    /// Ignores Range: 200 with the whole file.
    WholeFile,
    /// 206 in a transfer encoding the client cannot decode.
    Gzipped,
}

struct ServerState {
    files: HashMap<String, Vec<u8>>,
    style: ResponseStyle,
    n_connections: AtomicUsize,
    n_requests: AtomicUsize,
    /// Every request target as received, to prove what was (not) sent.
    request_targets: Mutex<Vec<String>>,
    stopping: AtomicBool,
    open_connections: Mutex<Vec<TcpStream>>,
}

struct WebdavServer {
    address: SocketAddr,
    state: Arc<ServerState>,
    accept_thread: Option<JoinHandle<()>>,
}

fn percent_decode(target: &str) -> Vec<u8> {
    let bytes = target.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = target.get(index + 1..index + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            decoded.push(byte);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    decoded
}

/// `bytes=first-last` → inclusive bounds.
fn parse_range(value: &str) -> Option<(u64, u64)> {
    let (first, last) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

fn serve_connection(state: &ServerState, stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut range = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = parse_range(value.trim());
            }
        }
        state.n_requests.fetch_add(1, Ordering::SeqCst);
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        state
            .request_targets
            .lock()
            .expect("targets")
            .push(target.to_owned());
        let path = String::from_utf8(percent_decode(target)).unwrap_or_default();
        let Some(contents) = state.files.get(&path) else {
            let body = "not found";
            write!(
                writer,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        };
        let length = contents.len() as u64;
        if state.style == ResponseStyle::WholeFile {
            write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n"
            )?;
            writer.write_all(contents)?;
            continue;
        }
        let (first, last) = range.unwrap_or((0, length.saturating_sub(1)));
        if first >= length {
            write!(
                writer,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{length}\r\nContent-Length: 0\r\n\r\n"
            )?;
            continue;
        }
        let last = last.min(length - 1);
        let body = &contents[first as usize..=last as usize];
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {first}-{last}/{length}\r\n"
        );
        match state.style {
            ResponseStyle::Ranged => {
                write!(writer, "{head}Content-Length: {}\r\n\r\n", body.len())?;
                writer.write_all(body)?;
            }
            ResponseStyle::Chunked | ResponseStyle::Gzipped => {
                let encoding = if state.style == ResponseStyle::Chunked {
                    "chunked"
                } else {
                    "gzip, chunked"
                };
                write!(writer, "{head}Transfer-Encoding: {encoding}\r\n\r\n")?;
                // Odd chunk sizes, with a chunk extension on the first.
                for (index, chunk) in body.chunks(1_000 + 7).enumerate() {
                    let extension = if index == 0 { ";note=first" } else { "" };
                    write!(writer, "{:x}{extension}\r\n", chunk.len())?;
                    writer.write_all(chunk)?;
                    writer.write_all(b"\r\n")?;
                }
                writer.write_all(b"0\r\nX-Trailer: done\r\n\r\n")?;
            }
            ResponseStyle::WholeFile => unreachable!("answered above"),
        }
    }
}

impl WebdavServer {
    /// Serves `files` (decoded request path → bytes) on a free loopback port.
    fn start(files: HashMap<String, Vec<u8>>, style: ResponseStyle) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(ServerState {
            files,
            style,
            n_connections: AtomicUsize::new(0),
            n_requests: AtomicUsize::new(0),
            request_targets: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            open_connections: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        let accept_thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_state.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accept_state.n_connections.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                if let Ok(copy) = stream.try_clone() {
                    accept_state
                        .open_connections
                        .lock()
                        .expect("connections")
                        .push(copy);
                }
                let connection_state = accept_state.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(&connection_state, stream);
                });
            }
        });
        WebdavServer {
            address,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/webdav", self.address)
    }

    fn n_connections(&self) -> usize {
        self.state.n_connections.load(Ordering::SeqCst)
    }

    fn n_requests(&self) -> usize {
        self.state.n_requests.load(Ordering::SeqCst)
    }

    /// Closes the listening socket and every open connection.
    fn stop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then drops the listener.
        let _ = TcpStream::connect(self.address);
        accept_thread.join().expect("accept thread");
        for connection in self
            .state
            .open_connections
            .lock()
            .expect("connections")
            .drain(..)
        {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for WebdavServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The library's files, with a zero-length and a one-byte file added.
fn remote_files() -> Vec<SourceFile> {
    let mut files = library_files();
    files.push(movie("1111000099999999", "Tiny", "1980", 9, 1));
    files.push(movie("2222000099999999", "Empty", "1981", 10, 0));
    files
}

fn served(files: &[SourceFile]) -> HashMap<String, Vec<u8>> {
    files
        .iter()
        .filter_map(|file| {
            let contents = file.contents.clone()?;
            Some((format!("/webdav/{}", file.file_path), contents))
        })
        .collect()
}

/// Mounts with an empty files root, so that every read goes to WebDAV.
fn mount_remote(
    fixture: &Fixture,
    files_root: &tempfile::TempDir,
    server: &WebdavServer,
) -> MountHandle {
    fixture.mount_with(|options| {
        options.files_root = files_root.path().to_path_buf();
        options.webdav_base_url = Some(server.base_url());
        options.n_threads = N_THREADS;
    })
}

/// FUSE threads: at most this many reads run at once, so at most this
/// many connections are needed.
const N_THREADS: usize = 2;

fn mounted_path(fixture: &Fixture, hash_id: &str) -> std::path::PathBuf {
    let library = fixture.library.read();
    let ino = library.tree().file_by_hash(hash_id).expect("visible").ino();
    fixture.at(&library.tree().path_of(ino).expect("path"))
}

#[test]
fn remote_files_read_byte_identical_over_few_connections() {
    metafuse_testkit::require_fuse!();
    for style in [
        ResponseStyle::Ranged,
        ResponseStyle::Chunked,
        ResponseStyle::WholeFile,
    ] {
        let files = remote_files();
        let fixture = Fixture::new(&files);
        let empty_root = tempfile::tempdir().expect("files root");
        let server = WebdavServer::start(served(&files), style);
        let _handle = mount_remote(&fixture, &empty_root, &server);
        // Reads at offsets first, while no page is cached yet, so that
        // they reach the server at those offsets; then whole files.
        let opened: Vec<(fs::File, &Vec<u8>)> = files
            .iter()
            .map(|file| {
                let source = file.contents.as_ref().expect("contents");
                (
                    fs::File::open(mounted_path(&fixture, file.hash_id)).expect("open"),
                    source,
                )
            })
            .collect();
        let mut table = metafuse_testkit::TableCheck::new();
        for (file, source) in &opened {
            let length = source.len();
            for offset in [
                0,
                1,
                4095,
                131_071,
                length / 2,
                length.saturating_sub(1),
                length,
                length + 5_000,
            ] {
                let mut buffer = vec![0; 10_000];
                let start = offset.min(length);
                let end = (offset + 10_000).min(length);
                // Bytes are compared, not printed: a failing row names its
                // place and the lengths.
                match file.read_at(&mut buffer, offset as u64) {
                    Ok(n_read) => table.check(
                        buffer[..n_read] == source[start..end],
                        format!(
                            "{style:?} at {offset}: {n_read} bytes read, expected {} equal bytes",
                            end - start
                        ),
                    ),
                    Err(error) => table.check(false, format!("{style:?} at {offset}: {error}")),
                }
            }
        }
        for file in &files {
            let source = file.contents.as_ref().expect("contents");
            let mounted = mounted_path(&fixture, file.hash_id);
            assert_eq!(
                &fs::read(&mounted).expect("read"),
                source,
                "{style:?} {mounted:?}"
            );
        }
        let (n_connections, n_requests) = (server.n_connections(), server.n_requests());
        eprintln!("{style:?}: {n_requests} requests on {n_connections} connections");
        assert!(
            n_requests >= files.len() - 1,
            "{style:?}: {n_requests} requests"
        );
        if style != ResponseStyle::WholeFile {
            assert!(
                n_connections <= N_THREADS,
                "{style:?}: {n_requests} requests needed {n_connections} connections"
            );
        }
    }
}

#[test]
fn a_file_missing_on_the_server_stays_listed_and_reads_give_eio() {
    metafuse_testkit::require_fuse!();
    let files = remote_files();
    let fixture = Fixture::new(&files);
    let empty_root = tempfile::tempdir().expect("files root");
    let mut served_files = served(&files);
    let missing = &files[0];
    served_files.remove(&format!("/webdav/{}", missing.file_path));
    let server = WebdavServer::start(served_files, ResponseStyle::Ranged);
    let _handle = mount_remote(&fixture, &empty_root, &server);

    let mounted = mounted_path(&fixture, missing.hash_id);
    let relative = mounted
        .strip_prefix(fixture.mountpoint.path())
        .expect("under mount");
    assert!(walk(fixture.mountpoint.path()).contains(&format!("/{}", relative.display())));
    let expected_length = missing.contents.as_ref().expect("contents").len() as u64;
    assert_eq!(fs::metadata(&mounted).expect("stat").len(), expected_length);
    for _ in 0..3 {
        let error = fs::read(&mounted).expect_err("404");
        assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    }
    assert!(mounted.exists(), "still listed after failed reads");

    // The connection survives a 404 (its body is read) and serves the rest.
    let other = &files[1];
    assert_eq!(
        &fs::read(mounted_path(&fixture, other.hash_id)).expect("read"),
        other.contents.as_ref().expect("contents")
    );
    assert!(
        server.n_connections() <= N_THREADS,
        "{} connections",
        server.n_connections()
    );
}

#[test]
fn a_vanished_server_gives_eio_and_the_mount_stays_up() {
    metafuse_testkit::require_fuse!();
    let files = remote_files();
    let fixture = Fixture::new(&files);
    let empty_root = tempfile::tempdir().expect("files root");
    let mut server = WebdavServer::start(served(&files), ResponseStyle::Ranged);
    let _handle = mount_remote(&fixture, &empty_root, &server);
    let (first, second) = (&files[0], &files[1]);
    assert_eq!(
        &fs::read(mounted_path(&fixture, first.hash_id)).expect("read"),
        first.contents.as_ref().expect("contents")
    );

    server.stop();
    // The pooled connection is closed and no new one is accepted.
    let error = fs::read(mounted_path(&fixture, second.hash_id)).expect_err("server gone");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");

    assert!(metafuse_testkit::is_mounted(fixture.mountpoint.path()));
    assert_eq!(
        walk(fixture.mountpoint.path()),
        fixture.library.read().file_paths().into_iter().collect()
    );
    assert!(mounted_path(&fixture, second.hash_id).exists());
}

#[test]
fn an_undecodable_response_gives_eio() {
    metafuse_testkit::require_fuse!();
    let files = remote_files();
    let fixture = Fixture::new(&files);
    let empty_root = tempfile::tempdir().expect("files root");
    let server = WebdavServer::start(served(&files), ResponseStyle::Gzipped);
    let _handle = mount_remote(&fixture, &empty_root, &server);
    let error = fs::read(mounted_path(&fixture, files[0].hash_id)).expect_err("gzip");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(server.n_requests() >= 1);
}

/// A `filePath` with `..` must never reach the upstream server: neither
/// raw nor percent-encoded; reading it fails without outside bytes.
#[test]
fn parent_components_never_reach_the_upstream() {
    let secret = b"outside the tree".to_vec();
    let mut files = vec![movie("aaaa000011111111", "Heat", "1995", 1, 1000)];
    for (hash_id, title, file_path) in [
        ("cccc000022222222", "Escape", "../../../../etc/shadow"),
        ("dddd000033333333", "Middle", "movies/../../etc/shadow"),
        ("eeee000044444444", "Dot", "."),
    ] {
        files.push(SourceFile {
            hash_id,
            file_path: file_path.to_owned(),
            properties: vec![
                ("title", title.to_owned()),
                ("movieYear", "2000".to_owned()),
            ],
            contents: None,
        });
    }
    let fixture = Fixture::new(&files[..1]);
    support::apply(
        &fixture.library,
        &files[1..]
            .iter()
            .flat_map(support::values_of)
            .collect::<Vec<_>>(),
    );
    let empty_root = tempfile::tempdir().expect("files root");
    let mut served_files = served(&files[..1]);
    // What a naive client would fetch for the escaping paths.
    served_files.insert("/etc/shadow".to_owned(), secret.clone());
    served_files.insert("/webdav/../../../../etc/shadow".to_owned(), secret.clone());
    let server = WebdavServer::start(served_files, ResponseStyle::Ranged);
    let _handle = mount_remote(&fixture, &empty_root, &server);
    for hash_id in ["cccc000022222222", "dddd000033333333", "eeee000044444444"] {
        let path = mounted_path(&fixture, hash_id);
        let error = fs::read(&path).expect_err("escaping path read");
        assert_eq!(
            error.raw_os_error(),
            Some(libc::EACCES),
            "{path:?}: {error}"
        );
    }
    // The good file still reads over WebDAV.
    let good = fs::read(mounted_path(&fixture, "aaaa000011111111")).expect("good file");
    assert_eq!(&good, files[0].contents.as_ref().expect("contents"));
    let targets = server
        .state
        .request_targets
        .lock()
        .expect("targets")
        .clone();
    assert!(!targets.is_empty());
    for target in &targets {
        let lowered = target.to_ascii_lowercase();
        assert!(
            !target.contains("..") && !lowered.contains("%2e") && target.starts_with("/webdav/"),
            "sent {target}"
        );
    }
}
