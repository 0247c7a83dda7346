//! Replay and snapshot reach the same state as Redis holds, for random
//! sequences of writer operations.
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::{contents, expected, relevant};
use metafuse_stream::{Projection, Source, Strategy as Bootstrap};
use metafuse_testkit::{RedisServer, Writer, read_truth};
use proptest::prelude::*;

const PROPERTIES: [&str; 6] = [
    "filePath",
    "title",
    "titles/eng",
    "genre",
    "audio/0/codec",
    "season",
];

#[derive(Clone, Debug)]
enum Operation {
    Set { file: u8, property: u8, value: u8 },
    Delete { file: u8, property: u8 },
    Move { file: u8, value: u8 },
    UnknownKey,
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        4 => (0u8..5, 0u8..6, 0u8..3).prop_map(|(file, property, value)| Operation::Set { file, property, value }),
        2 => (0u8..5, 0u8..6).prop_map(|(file, property)| Operation::Delete { file, property }),
        1 => (0u8..5, 0u8..3).prop_map(|(file, value)| Operation::Move { file, value }),
        1 => Just(Operation::UnknownKey),
    ]
}

/// Applies the operations to Redis as writers would.
fn write(connection: &mut redis::Connection, operations: &[Operation]) {
    let mut writer = Writer::new(connection, "");
    for operation in operations {
        match *operation {
            Operation::Set {
                file,
                property,
                value,
            } => {
                // Value 0 is the writers' null: "".
                let value = if value == 0 {
                    String::new()
                } else {
                    format!("v{value}")
                };
                writer.set(&format!("h{file}"), PROPERTIES[property as usize], &value)
            }
            Operation::Delete { file, property } => {
                writer.del(&format!("h{file}"), PROPERTIES[property as usize])
            }
            Operation::Move { file, value } => writer.set(
                &format!("h{file}"),
                "filePath",
                &format!("watch/m{value}.mkv"),
            ),
            Operation::UnknownKey => writer.event("set", "unknown:x"),
        };
    }
    writer.flush().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn replay_and_snapshot_reach_the_same_state(operations in prop::collection::vec(operation(), 0..80)) {
        let server = SERVER.with(|server| server.url());
        let mut connection = redis::Client::open(server.as_str()).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
        write(&mut connection, &operations);
        let truth = read_truth(&mut connection, "").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (replayed, snapshotted) = runtime.block_on(async {
            let mut source = Source::connect(&server, "").await.unwrap();
            let mut replayed = Projection::new(relevant());
            source.bootstrap(&mut replayed, Bootstrap::Replay, |_| {}).await.unwrap();
            let mut snapshotted = Projection::new(relevant());
            source.bootstrap(&mut snapshotted, Bootstrap::Snapshot, |_| {}).await.unwrap();
            (replayed, snapshotted)
        });
        let want = expected(&truth, &relevant());
        prop_assert_eq!(&contents(&replayed), &want);
        prop_assert_eq!(&contents(&snapshotted), &want);
        prop_assert_eq!(replayed.complete_count(), snapshotted.complete_count());
    }
}

thread_local! {
    /// One server for every case of this thread: starting one per case
    /// would dominate the run.
    static SERVER: RedisServer = RedisServer::start().unwrap();
}
