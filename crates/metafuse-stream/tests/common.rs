//! Helpers shared by the Redis integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use metafuse_stream::{Projection, RelevantProperties, Source, Strategy};
pub use metafuse_testkit::Files;

/// The properties the shipped rules use (plus the core set, always added).
pub fn relevant() -> RelevantProperties {
    RelevantProperties::from_names([
        "fileType",
        "title",
        "originalTitle",
        "season",
        "episode",
        "movieYear",
        "subtitleLanguage",
        "version",
        "extra",
        "titles/eng",
    ])
}

/// Every file's stored properties.
pub fn contents(projection: &Projection) -> Files {
    projection
        .files()
        .map(|(hash_id, file)| {
            let properties = file
                .properties()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect();
            (hash_id.to_owned(), properties)
        })
        .collect()
}

/// What the projection must hold given what Redis holds.
pub fn expected(truth: &Files, relevant: &RelevantProperties) -> Files {
    truth
        .iter()
        .map(|(hash_id, properties)| {
            let kept: BTreeMap<String, String> = properties
                .iter()
                .filter(|(name, value)| relevant.is_relevant(name) && !value.is_empty())
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            (hash_id.clone(), kept)
        })
        .filter(|(_, properties)| !properties.is_empty())
        .collect()
}

pub async fn bootstrap(
    url: &str,
    prefix: &str,
    strategy: Strategy,
) -> (Projection, metafuse_stream::BootstrapReport) {
    let mut source = Source::connect(url, prefix).await.unwrap();
    let mut projection = Projection::new(relevant());
    let report = source
        .bootstrap(&mut projection, strategy, |_| {})
        .await
        .unwrap();
    (projection, report)
}

/// The stream's last id as Redis reports it.
pub fn last_generated_id(connection: &mut redis::Connection) -> String {
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg("meta:events")
        .query(connection)
        .unwrap();
    let redis::Value::Array(items) = info else {
        panic!("unexpected XINFO reply {info:?}")
    };
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        if name == redis::Value::BulkString(b"last-generated-id".to_vec()) {
            let redis::Value::BulkString(id) = value else {
                panic!("odd id")
            };
            return String::from_utf8(id).unwrap();
        }
    }
    panic!("no last-generated-id")
}
