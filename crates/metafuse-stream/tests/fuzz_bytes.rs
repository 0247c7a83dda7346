//! Stream entries, keys and values as arbitrary bytes, through the real
//! decoders (the raw RESP replay, the snapshot, the redis-crate tail)
//! against a real redis-server: nothing panics, and every well-formed file
//! comes out with its values — non-UTF-8 ones decoded, never dropped.
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::relevant;
use metafuse_stream::{Projection, Source, Strategy as Bootstrap, TailEvent};
use metafuse_testkit::RedisServer;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct WellFormed {
    hash_id: String,
    title: Vec<u8>,
    file_path: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Junk {
    /// An entry with arbitrary fields (names and values as bytes).
    Entry(Vec<(Vec<u8>, Vec<u8>)>),
    /// An arbitrary key set to an arbitrary value, announced by a `set` entry.
    KeyValue(Vec<u8>, Vec<u8>),
    /// A `set` entry for a `file:` key whose hashId or property is junk.
    FileKey(Vec<u8>, Vec<u8>),
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn well_formed() -> impl Strategy<Value = WellFormed> {
    ("[a-f0-9]{6,12}", bytes(24), bytes(24)).prop_map(|(hash_id, title, mut file_path)| {
        // A file is complete with a non-empty path.
        file_path.insert(0, b'p');
        WellFormed {
            hash_id,
            title,
            file_path,
        }
    })
}

fn junk() -> impl Strategy<Value = Junk> {
    prop_oneof![
        proptest::collection::vec((bytes(8), bytes(24)), 1..5).prop_map(Junk::Entry),
        (bytes(24), bytes(24)).prop_map(|(key, value)| Junk::KeyValue(key, value)),
        (bytes(12), bytes(12)).prop_map(|(hash_id, property)| Junk::FileKey(hash_id, property)),
    ]
}

fn append(pipeline: &mut redis::Pipeline, fields: &[(&[u8], &[u8])]) {
    let command = pipeline.cmd("XADD").arg("meta:events").arg("*");
    for (name, value) in fields {
        command.arg(*name).arg(*value);
    }
    command.ignore();
}

fn write(server: &RedisServer, files: &[WellFormed], junk: &[Junk]) {
    let mut connection = server.client().get_connection().unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
    let mut pipeline = redis::pipe();
    let mut junk = junk.iter();
    for file in files {
        for (property, value) in [
            ("title", &file.title[..]),
            ("fileType", b"video"),
            ("filePath", &file.file_path[..]),
        ] {
            let key = format!("file:{}/{property}", file.hash_id);
            pipeline.cmd("SET").arg(&key).arg(value).ignore();
            pipeline
                .cmd("SADD")
                .arg("file:__index__")
                .arg(&file.hash_id)
                .ignore();
            append(
                &mut pipeline,
                &[(b"type", b"set"), (b"key", key.as_bytes())],
            );
            // Junk between the writes of well-formed files.
            match junk.next() {
                Some(Junk::Entry(fields)) => {
                    let fields: Vec<(&[u8], &[u8])> = fields
                        .iter()
                        .map(|(name, value)| (&name[..], &value[..]))
                        .collect();
                    append(&mut pipeline, &fields);
                }
                Some(Junk::KeyValue(key, value)) => {
                    pipeline.cmd("SET").arg(&key[..]).arg(&value[..]).ignore();
                    append(&mut pipeline, &[(b"type", b"set"), (b"key", key)]);
                }
                Some(Junk::FileKey(hash_id, property)) => {
                    let mut key = b"file:".to_vec();
                    key.extend_from_slice(hash_id);
                    key.push(b'/');
                    key.extend_from_slice(property);
                    append(&mut pipeline, &[(b"type", b"set"), (b"key", &key)]);
                }
                None => {}
            }
        }
    }
    let _: () = pipeline.query(&mut connection).unwrap();
}

/// The file's title and path as the projection holds them.
fn held(projection: &Projection, hash_id: &str) -> Option<(String, String)> {
    let file = projection
        .files()
        .find(|(id, _)| *id == hash_id)
        .map(|(_, file)| file)?;
    let value = |wanted: &str| {
        file.properties()
            .find(|(name, _)| *name == wanted)
            .map(|(_, value)| value.to_owned())
    };
    Some((value("title").unwrap_or_default(), value("filePath")?))
}

fn check(projection: &Projection, files: &[WellFormed], how: &str) {
    // The last write of a hashId wins (the generator may repeat one).
    let mut expected = std::collections::BTreeMap::new();
    for file in files {
        expected.insert(file.hash_id.clone(), file.clone());
    }
    for file in expected.values() {
        let (title, path) = held(projection, &file.hash_id)
            .unwrap_or_else(|| panic!("{how}: {} lost", file.hash_id));
        assert_eq!(
            &*metafuse_state::file_path_bytes(&path),
            &file.file_path[..],
            "{how}: path bytes of {}",
            file.hash_id
        );
        // An empty value is how writers store null.
        let expected_title = metafuse_state::stored_value("title", &file.title);
        assert_eq!(title, expected_title, "{how}: title of {}", file.hash_id);
    }
}

async fn run(server: &RedisServer, files: Vec<WellFormed>) {
    for strategy in [Bootstrap::Replay, Bootstrap::Snapshot] {
        let mut source = Source::connect(&server.url(), "").await.unwrap();
        let mut projection = Projection::new(relevant());
        source
            .bootstrap(&mut projection, strategy, |_| {})
            .await
            .unwrap();
        check(&projection, &files, strategy.name());
    }
    // The tail decodes with the redis crate: follow the whole stream.
    let source = Source::connect(&server.url(), "").await.unwrap();
    let mut connection = server.client().get_connection().unwrap();
    let end: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
        .arg("meta:events")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut connection)
        .unwrap();
    let end = end.into_iter().next().map(|(id, _)| id).unwrap();
    let mut tail = source.tail("0-0");
    tail.set_block(std::time::Duration::from_millis(20));
    let mut projection = Projection::new(relevant());
    while tail.last_event_id() != end {
        match tail.next_batch(&relevant()).await.unwrap() {
            TailEvent::Batch(batch) => {
                projection.apply_batch(batch.fetched());
                projection.record_events(batch.counts, &batch.last_event_id);
            }
            TailEvent::Resync { last_event_id } => panic!("resync at {last_event_id}"),
        }
    }
    check(&projection, &files, "tail");
}

#[test]
fn byte_soup_never_panics_nor_loses_a_well_formed_file() {
    // One server for every case (each case starts with `FLUSHALL`), owned
    // here so it stops with the test (a static one outlived the process).
    let server = RedisServer::start().unwrap();
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        files in proptest::collection::vec(well_formed(), 1..6),
        junk in proptest::collection::vec(junk(), 0..18),
    )| {
        write(&server, &files, &junk);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(&server, files));
    });
}
