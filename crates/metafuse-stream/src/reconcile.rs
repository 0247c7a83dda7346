//! Files the index does not list.
//!
//! A snapshot reads `file:__index__`; a file whose keys exist but which the
//! index lacks (a writer that skipped the `SADD`, a `SREM` left behind) is
//! seen by a replay and missed by the snapshot. The reconciliation after a
//! snapshot finds them: a paced `SCAN` of `{prefix}file:*/filePath` (on
//! every master of a cluster), then `SMISMEMBER` of the hashIds found
//! against the index, chunk by chunk. Their values are fetched by the owner
//! of the source, through [`Reconciler::fetch_plan`] and the source's
//! `fetch_plan`, so they are applied in order with the tail.

use std::time::Duration;

use metafuse_rules::RelevantProperties;
use metafuse_state::{FILE_KEY_PREFIX, FILE_PATH_PROPERTY, FetchPlan, escape_glob, index_key};

use crate::connect::Connector;
use crate::entries::RelevantKey;
use crate::error::StreamError;
use crate::source::{Pace, RESPONSE_TIMEOUT, Scan, scan, snapshot_names};

/// The background walk: small steps with a pause after each, so the
/// reconciliation never holds Redis for long (100k files, ~1.5M keys:
/// ~1,500 steps of well under a millisecond of Redis time each).
const BACKGROUND_PACE: Pace = Pace {
    count: 1_000,
    pause: Duration::from_millis(2),
};
/// HashIds per `SMISMEMBER`.
const HASH_IDS_PER_CHECK: usize = 1_000;

/// Finds files whose keys exist in Redis but which `file:__index__` does
/// not list, on connections of its own (see the module documentation).
#[derive(Clone)]
pub struct Reconciler {
    connector: Connector,
    prefix: String,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Reconciler")
            .field("url", &self.connector.redacted_url())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Reconciler {
    pub(crate) fn new(connector: Connector, prefix: &str) -> Self {
        Self {
            connector,
            prefix: prefix.to_owned(),
        }
    }

    /// The hashIds that have a `filePath` key but are not members of the
    /// index, each once. Walks the keyspace paced; in a cluster every
    /// master is walked.
    pub async fn unindexed_hash_ids(&self) -> Result<Vec<String>, StreamError> {
        let mut connection = self.connector.state(Some(RESPONSE_TIMEOUT)).await?;
        let pattern = format!(
            "{}{FILE_KEY_PREFIX}*/{FILE_PATH_PROPERTY}",
            escape_glob(&self.prefix)
        );
        // `*` also matches `/`: nested `…/x/filePath` keys are left out.
        let hash_ids: Vec<String> = scan(&mut connection, Scan::Keys(&pattern), BACKGROUND_PACE)
            .await?
            .into_iter()
            .filter_map(|key| RelevantKey::parse(key, &self.prefix).ok())
            .filter(|key| key.property() == FILE_PATH_PROPERTY)
            .map(|key| key.hash_id().to_owned())
            .collect();
        let index = index_key(&self.prefix);
        let mut unindexed = Vec::new();
        for chunk in hash_ids.chunks(HASH_IDS_PER_CHECK) {
            let members: Vec<bool> = match redis::cmd("SMISMEMBER")
                .arg(&index)
                .arg(chunk)
                .query_async(&mut connection)
                .await
            {
                // Redis < 6.2: one pipeline of `SISMEMBER`s instead.
                Err(error) if error.to_string().contains("unknown command") => {
                    let mut pipeline = redis::pipe();
                    for hash_id in chunk {
                        pipeline.cmd("SISMEMBER").arg(&index).arg(hash_id);
                    }
                    pipeline
                        .query_async(&mut connection)
                        .await
                        .map_err(StreamError::command("SISMEMBER file:__index__"))?
                }
                members => members.map_err(StreamError::command("SMISMEMBER file:__index__"))?,
            };
            unindexed.extend(
                chunk
                    .iter()
                    .zip(members)
                    .filter(|(_, member)| !member)
                    .map(|(hash_id, _)| hash_id.clone()),
            );
            tokio::time::sleep(BACKGROUND_PACE.pause).await;
        }
        Ok(unindexed)
    }

    /// What to fetch for `hash_ids` so they are as complete as a snapshot
    /// makes a file: every relevant name and its parents (the names a
    /// snapshot fetches). Pass it to the source's `fetch_plan`.
    pub fn fetch_plan(hash_ids: Vec<String>, relevant: &RelevantProperties) -> FetchPlan {
        FetchPlan {
            hash_ids,
            properties: snapshot_names(relevant),
            nested_prefixes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metafuse_testkit::{RedisServer, Writer};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finds_the_files_with_a_file_path_that_the_index_lacks() {
        let server = RedisServer::start().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let mut writer = Writer::new(&mut connection, "p:");
        for index in 0..2_500 {
            let hash_id = format!("h{index:05}");
            writer.set(&hash_id, "filePath", &format!("lib/{index}.mkv"));
            writer.set(&hash_id, "title", "T");
            if index % 100 == 7 {
                writer.remove_from_index(&hash_id);
            }
        }
        // In the index, no filePath; no filePath and not indexed; a nested
        // `…/filePath` that is not the file's own; another prefix.
        writer
            .set("no-path", "title", "T")
            .set("nested", "meta/filePath", "x")
            .remove_from_index("nested")
            .remove_from_index("no-path");
        writer.flush().unwrap();
        Writer::new(&mut connection, "other:")
            .set("elsewhere", "filePath", "e.mkv")
            .remove_from_index("elsewhere")
            .flush()
            .unwrap();

        let source = crate::Source::connect(&server.url(), "p:").await.unwrap();
        let mut found = source.reconciler().unindexed_hash_ids().await.unwrap();
        found.sort();
        let expected: Vec<String> = (0..2_500)
            .filter(|index| index % 100 == 7)
            .map(|index| format!("h{index:05}"))
            .collect();
        assert_eq!(found, expected);

        let relevant = RelevantProperties::from_names(["filePath", "titles/eng"]);
        let plan = Reconciler::fetch_plan(found, &relevant);
        assert_eq!(plan.hash_ids, expected);
        // What a snapshot fetches, parents of nested names included.
        assert_eq!(plan.properties, snapshot_names(&relevant));
        assert!(plan.properties.iter().any(|name| name == "titles"));
        assert!(plan.nested_prefixes.is_empty());
    }
}
