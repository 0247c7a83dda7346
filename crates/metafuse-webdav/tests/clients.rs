//! The WebDAV server driven by real clients (rclone, curl, python's XML
//! parser) against a live library, its FUSE mount and the API's token
//! routes.

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use metafuse_bytes::ByteSources;
use metafuse_rules::Rules;
use metafuse_state::FetchedValue;
use metafuse_vfs::{Library, SharedLibrary};
use metafuse_webdav::{TokenStore, WebdavAuth, WebdavServer};

fn contents(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn apply(library: &SharedLibrary, values: &[(&str, &str, Option<String>)]) {
    library.apply_batch(
        values
            .iter()
            .map(|(hash_id, property, value)| FetchedValue {
                hash_id,
                property,
                value: value.as_deref(),
            }),
    );
}

/// A movie whose source is `incoming/{hash_id}.mkv` under `root`.
fn add_movie(
    library: &SharedLibrary,
    root: &Path,
    hash_id: &str,
    title: &str,
    seed: u8,
    length: usize,
) {
    let file_path = format!("incoming/{hash_id}.mkv");
    fs::create_dir_all(root.join("incoming")).expect("source dir");
    fs::write(root.join(&file_path), contents(seed, length)).expect("source");
    apply(
        library,
        &[
            (hash_id, "filePath", Some(file_path)),
            (hash_id, "size", Some(length.to_string())),
            (hash_id, "mtime", Some("1700000000000".to_owned())),
            (hash_id, "title", Some(title.to_owned())),
            (hash_id, "movieYear", Some("1999".to_owned())),
        ],
    );
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("client runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every file below `root`, relative, as the mount lists it.
fn walk(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                found.insert(relative.to_str().expect("utf-8").to_owned());
            }
        }
    }
    found
}

/// The API's token routes use one store per process: tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Setup {
    _turn: std::sync::MutexGuard<'static, ()>,
    runtime: tokio::runtime::Runtime,
    sources: tempfile::TempDir,
    config_dir: tempfile::TempDir,
    library: SharedLibrary,
    webdav: SocketAddr,
    api: SocketAddr,
}

impl Setup {
    fn start(auth_tokens: bool) -> Self {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sources = tempfile::tempdir().expect("sources");
        let config_dir = tempfile::tempdir().expect("config");
        let rules = Arc::new(Rules::preset("default").expect("default preset"));
        let library = SharedLibrary::new(Library::new(rules));
        add_movie(
            &library,
            sources.path(),
            "aaaa000011111111",
            "Heat",
            1,
            300_000,
        );
        add_movie(
            &library,
            sources.path(),
            "bbbb000022222222",
            "Amélie 東京 [x] #1 100%",
            2,
            70_000,
        );
        add_movie(&library, sources.path(), "cccc000033333333", "Tiny", 3, 1);
        let store = Arc::new(TokenStore::new(config_dir.path()));
        metafuse_api::install_webdav_tokens(store.clone());
        let auth = if auth_tokens {
            WebdavAuth::Tokens(store)
        } else {
            WebdavAuth::NoAuth
        };
        let byte_sources = ByteSources::new(sources.path(), None).expect("sources");
        let server = Arc::new(WebdavServer::new(library.clone(), byte_sources, auth, ""));
        let (webdav, api) = runtime.block_on(async {
            let webdav_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addresses = (
                webdav_listener.local_addr().expect("address"),
                api_listener.local_addr().expect("address"),
            );
            tokio::spawn(metafuse_webdav::serve(
                webdav_listener,
                server,
                std::future::pending(),
            ));
            tokio::spawn(metafuse_api::serve(
                api_listener,
                metafuse_api::BackendSlot::empty(),
                std::future::pending(),
            ));
            addresses
        });
        Setup {
            _turn: turn,
            runtime,
            sources,
            config_dir,
            library,
            webdav,
            api,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.webdav)
    }

    /// Creates a token through `POST /api/webdav-tokens`: (id, token).
    fn create_token(&self, label: &str) -> (String, String) {
        let output = run(Command::new("curl").args([
            "-sS",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            &format!("{{\"label\":\"{label}\"}}"),
            "-w",
            "\n%{http_code}",
            &format!("http://{}/api/webdav-tokens", self.api),
        ]));
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let (body, status) = text.rsplit_once('\n').expect("status line");
        assert_eq!(status, "201", "{body}");
        let created: serde_json::Value = serde_json::from_str(body).expect("json");
        (
            created["id"].as_str().expect("id").to_owned(),
            created["token"].as_str().expect("token").to_owned(),
        )
    }

    /// `curl` with `args`: (status, headers, body).
    fn curl(&self, args: &[&str]) -> (u16, String, Vec<u8>) {
        let headers_file = self.config_dir.path().join("headers.txt");
        let output = run(Command::new("curl")
            .args(["-sS", "--path-as-is", "-D"])
            .arg(&headers_file)
            .args(args));
        let headers = fs::read_to_string(&headers_file).expect("headers");
        let status = headers
            .lines()
            .rev()
            .find(|line| line.starts_with("HTTP/"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .expect("status");
        (status, headers, output.stdout)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Nothing to await: the runtime drops its tasks.
        let _ = &self.runtime;
    }
}

fn propfind_hrefs(body: &[u8]) -> Vec<String> {
    let script = r#"
import sys, urllib.parse, xml.etree.ElementTree as tree
root = tree.fromstring(sys.stdin.buffer.read())
for response in root.findall("{DAV:}response"):
    href = response.find("{DAV:}href").text
    length = response.find(".//{DAV:}getcontentlength")
    print(urllib.parse.unquote(href) + "\t" + (length.text if length is not None else "-"))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write");
    let output = child.wait_with_output().expect("python3");
    assert!(
        output.status.success(),
        "not XML: {}",
        String::from_utf8_lossy(body)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rclone(setup: &Setup, token: &str, args: &[&str]) -> Output {
    let obscured = run(Command::new("rclone").args(["obscure", token]));
    let obscured = String::from_utf8(obscured.stdout).expect("utf-8");
    run(Command::new("rclone")
        .args(args)
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_WEBDAV_URL", setup.url("/"))
        .env("RCLONE_WEBDAV_USER", "tv")
        .env("RCLONE_WEBDAV_PASS", obscured.trim()))
}

#[test]
fn rclone_lists_the_mount_tree_and_copies_identical_bytes_with_an_api_token() {
    let setup = Setup::start(true);
    let mountpoint = tempfile::tempdir().expect("mountpoint");
    let mut options = metafuse_fuse::MountOptions::new(mountpoint.path(), setup.sources.path());
    options.passthrough = false;
    let mount = metafuse_fuse::mount(setup.library.clone(), options).expect("mount");
    let (_, token) = setup.create_token("living room");

    let listing = rclone(&setup, &token, &["lsf", "-R", "--files-only", ":webdav:"]);
    let listed: BTreeSet<String> = String::from_utf8(listing.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    let mounted = walk(mountpoint.path());
    assert_eq!(listed, mounted);
    assert_eq!(listed.len(), 3);

    let copy = tempfile::tempdir().expect("copy");
    rclone(
        &setup,
        &token,
        &["copy", ":webdav:", copy.path().to_str().expect("utf-8")],
    );
    for relative in &mounted {
        let copied = fs::read(copy.path().join(relative)).expect("copied");
        let through_mount = fs::read(mountpoint.path().join(relative)).expect("mounted");
        assert!(copied == through_mount, "{relative}: bytes differ");
    }
    mount.unmount().expect("unmount");
}

fn path_of(library: &SharedLibrary, hash_id: &str) -> String {
    let library = library.read();
    let ino = library.tree().file_by_hash(hash_id).expect("visible").ino();
    library.tree().path_of(ino).expect("path")
}

fn encoded(path: &str) -> String {
    let mut out = String::new();
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[test]
fn curl_ranges_propfind_auth_read_only_and_live_changes() {
    let setup = Setup::start(true);
    let (id, token) = setup.create_token("curl");
    let credentials = format!("anyone:{token}");
    let heat = path_of(&setup.library, "aaaa000011111111");
    let heat_url = setup.url(&encoded(&heat));
    let heat_bytes = contents(1, 300_000);

    // Single and multi-range reads.
    let (status, headers, body) = setup.curl(&["-u", &credentials, "-r", "1000-1999", &heat_url]);
    assert_eq!(status, 206, "{headers}");
    assert!(body == heat_bytes[1000..2000], "range bytes differ");
    let (status, headers, body) = setup.curl(&["-u", &credentials, "-r", "0-9,299990-", &heat_url]);
    assert_eq!(status, 206);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("multipart/byteranges"),
        "{headers}"
    );
    assert!(
        body.windows(10)
            .any(|window| window == &heat_bytes[299_990..])
    );
    // Whole file, then a conditional GET with its ETag.
    let (status, headers, body) = setup.curl(&["-u", &credentials, &heat_url]);
    assert_eq!(status, 200);
    assert!(body == heat_bytes, "whole file differs");
    let etag = headers
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .starts_with("etag:")
                .then(|| line[5..].trim().to_owned())
        })
        .expect("etag");
    let (status, _, _) = setup.curl(&[
        "-u",
        &credentials,
        "-H",
        &format!("If-None-Match: {etag}"),
        &heat_url,
    ]);
    assert_eq!(status, 304);

    // PROPFIND depth 1 of the movies' directory, parsed as XML.
    let directory = heat
        .rsplit_once('/')
        .map_or("/", |(parent, _)| parent)
        .to_owned();
    let directory = directory
        .rsplit_once('/')
        .map_or("/".to_owned(), |(parent, _)| format!("{parent}/"));
    let (status, _, body) = setup.curl(&[
        "-u",
        &credentials,
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &setup.url(&encoded(&directory)),
    ]);
    assert_eq!(status, 207);
    let hrefs = propfind_hrefs(&body);
    let expected_children = setup
        .library
        .read()
        .resolve(&directory)
        .map(|node| node.ino())
        .and_then(|ino| setup.library.read().children(ino).map(Iterator::count))
        .expect("directory");
    assert_eq!(hrefs.len(), expected_children + 1, "{hrefs:?}");
    // Depth 0 of the file: its live properties.
    let (status, _, body) = setup.curl(&[
        "-u",
        &credentials,
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 0",
        &heat_url,
    ]);
    assert_eq!(status, 207);
    let text = String::from_utf8_lossy(&body).into_owned();
    for property in [
        "displayname",
        "getcontentlength",
        "getlastmodified",
        "creationdate",
        "resourcetype",
        "getetag",
        "getcontenttype",
    ] {
        assert!(text.contains(property), "{property} missing: {text}");
    }
    assert_eq!(propfind_hrefs(&body), [format!("{heat}\t300000")]);
    // HEAD: headers only.
    let (status, headers, body) = setup.curl(&["-u", &credentials, "-I", &heat_url]);
    assert_eq!(status, 200);
    assert!(body.is_empty() || !body.starts_with(&heat_bytes[..10]));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-length: 300000"),
        "{headers}"
    );
    let (status, _, body) = setup.curl(&[
        "-u",
        &credentials,
        "-X",
        "PROPFIND",
        "-H",
        "Depth: infinity",
        &setup.url("/"),
    ]);
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("propfind-finite-depth"));

    // No token, a wrong one: 401 with the realm.
    for args in [
        vec![heat_url.as_str()],
        vec![
            "-u",
            "anyone:mfwd_00000000000000000000000000000000",
            heat_url.as_str(),
        ],
    ] {
        let (status, headers, _) = setup.curl(&args);
        assert_eq!(status, 401);
        assert!(
            headers.contains("Basic realm=\"metafuse-webdav\""),
            "{headers}"
        );
    }

    // Every write method refused, the sources untouched.
    let before = walk(setup.sources.path());
    for method in [
        "PUT",
        "DELETE",
        "MKCOL",
        "COPY",
        "MOVE",
        "PROPPATCH",
        "LOCK",
        "POST",
    ] {
        let (status, _, _) = setup.curl(&[
            "-u",
            &credentials,
            "-X",
            method,
            "-H",
            &format!("Destination: {}", setup.url("/copy.mkv")),
            "--data",
            "x",
            &heat_url,
        ]);
        assert!(status == 403 || status == 405, "{method}: {status}");
    }
    assert_eq!(walk(setup.sources.path()), before);
    let source = setup.sources.path().join("incoming/aaaa000011111111.mkv");
    assert!(fs::read(source).expect("source") == heat_bytes);

    // Paths that try to climb out never leave the tree.
    fs::write(setup.sources.path().join("../secret-outside"), b"SECRET").ok();
    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/Movies%2F..%2F..%2Fetc%2Fpasswd",
        "/..%2f..%2fetc%2fpasswd",
        "/../secret-outside",
    ] {
        let (status, _, body) = setup.curl(&["-u", &credentials, &setup.url(path)]);
        let text = String::from_utf8_lossy(&body);
        assert!(
            status != 200 || !(text.contains("root:") || text.contains("SECRET")),
            "{path}: {status} {text}"
        );
        assert!(
            !text.contains("root:x:") && !text.contains("SECRET"),
            "{path}"
        );
    }

    // Live: a file added, one moved (retitled), one deleted in the library.
    add_movie(
        &setup.library,
        setup.sources.path(),
        "dddd000044444444",
        "Ronin",
        4,
        500,
    );
    apply(
        &setup.library,
        &[("cccc000033333333", "title", Some("Tinier".to_owned()))],
    );
    apply(&setup.library, &[("bbbb000022222222", "filePath", None)]);
    let (_, _, body) = setup.curl(&[
        "-u",
        &credentials,
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &setup.url(&encoded(&directory)),
    ]);
    let listed = propfind_hrefs(&body).join("\n");
    assert!(listed.contains("Ronin"), "{listed}");
    assert!(
        listed.contains("Tinier") && !listed.contains("Tiny ("),
        "{listed}"
    );
    assert!(!listed.contains("Amélie"), "{listed}");

    // Revocation through the API applies to the next request.
    let (status, _, _) = setup.curl(&[
        "-X",
        "DELETE",
        &format!("http://{}/api/webdav-tokens/{id}", setup.api),
    ]);
    assert_eq!(status, 204);
    let (status, headers, _) = setup.curl(&["-u", &credentials, &heat_url]);
    assert_eq!(status, 401);
    assert!(headers.contains("Basic realm=\"metafuse-webdav\""));
}

#[test]
fn options_advertise_class_1_and_failed_attempts_are_rate_limited() {
    let setup = Setup::start(true);
    let (_, token) = setup.create_token("probe");
    let (status, headers, _) = setup.curl(&[
        "-u",
        &format!("x:{token}"),
        "-X",
        "OPTIONS",
        &setup.url("/"),
    ]);
    assert_eq!(status, 200, "{headers}");
    let lowered = headers.to_ascii_lowercase();
    assert!(lowered.contains("\ndav: 1\r"), "{headers}");
    assert!(
        !lowered.contains("lock") && !lowered.contains("put"),
        "{headers}"
    );
    // Ten wrong passwords, then even the right one waits.
    for _ in 0..10 {
        let (status, _, _) = setup.curl(&["-u", "x:wrong", &setup.url("/")]);
        assert_eq!(status, 401);
    }
    let (status, headers, _) = setup.curl(&["-u", &format!("x:{token}"), &setup.url("/")]);
    assert_eq!(status, 429, "{headers}");
    assert!(headers.to_ascii_lowercase().contains("retry-after:"));
}

#[test]
fn without_auth_everyone_reads() {
    let setup = Setup::start(false);
    let (status, _, body) = setup.curl(&["-X", "PROPFIND", "-H", "Depth: 1", &setup.url("/")]);
    assert_eq!(status, 207);
    assert!(propfind_hrefs(&body).len() > 1);
}

/// litmus's `basic` and `props` suites. Against a read-only server
/// litmus can only run `init` (OPTIONS): its `begin` step must create the
/// collection `/litmus/` (MKCOL) and every later test writes (PUT,
/// DELETE, MKCOL, PROPPATCH, or reads back what it wrote), so they are
/// skipped. The read-only equivalents (OPTIONS, PROPFIND depth 0/1, GET,
/// HEAD, ranges, conditionals) are checked by hand in the tests above.
#[test]
fn litmus_basic_and_props_stop_at_the_first_write() {
    let setup = Setup::start(false);
    let scratch = tempfile::tempdir().expect("litmus writes debug.log here");
    let output = Command::new("litmus")
        .env("TESTS", "basic props")
        .current_dir(scratch.path())
        .arg(setup.url("/"))
        .output()
        .expect("litmus");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{text}");
    let verdicts: Vec<(&str, bool)> = text
        .lines()
        .filter_map(|line| {
            let (name, verdict) = line.rsplit_once("..")?;
            let name = name.trim_end_matches('.').split_whitespace().last()?;
            let verdict = verdict.trim_start_matches('.').trim();
            Some((name, verdict.starts_with("pass")))
        })
        .collect();
    assert!(verdicts.contains(&("init", true)), "{text}");
    for (name, passed) in &verdicts {
        // `begin` is litmus's MKCOL of its scratch collection.
        assert!(
            *passed || *name == "begin",
            "unexpected litmus failure {name}: {text}"
        );
    }
    assert!(text.contains("403 Forbidden"), "{text}");
}
