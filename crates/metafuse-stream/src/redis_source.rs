//! The Redis implementation of the source layer's [`MetadataSource`].

use std::time::Duration;

use metafuse_rules::RelevantProperties;
use metafuse_source::{
    BootstrapReport, BoxFuture, EventIdOrder, FetchedValues, MetadataSource, ProgressFn,
    SourceError, SourceKind, TailEvent, TailStatus, TopologyReader,
};
use metafuse_state::{FetchPlan, Projection};

use crate::entries::{StreamId, stream_id_order};
use crate::error::StreamError;
use crate::info::stream_info;
use crate::reconcile::Reconciler;
use crate::source::{Source, Strategy};
use crate::tail::Tail;

/// A MetaMesh Redis as a [`MetadataSource`]: bootstrap by replay or
/// snapshot, then the live tail of `meta:events`.
///
/// The first bootstrap uses the strategy given to [`RedisSource::connect`];
/// later ones (resynchronisations: the stream lost entries, so a replay could
/// not be complete) take a snapshot.
#[derive(Debug)]
pub struct RedisSource {
    source: Source,
    tail: Tail,
    strategy: Strategy,
}

impl RedisSource {
    /// Connects to `url` (`redis://` or `rediss://`, password in the URL);
    /// `prefix` (`REDIS_PREFIX`) is put before every `file:` key.
    pub async fn connect(url: &str, prefix: &str, strategy: Strategy) -> Result<Self, StreamError> {
        let source = Source::connect(url, prefix).await?;
        let tail = source.tail("0-0");
        Ok(Self {
            source,
            tail,
            strategy,
        })
    }

    /// How long one `XREAD BLOCK` of the tail waits before it is reissued.
    pub fn set_block(&mut self, block: Duration) {
        self.tail.set_block(block);
    }

    /// Whether the tail decodes its reads from raw RESP (the default) or
    /// with the redis crate's parser, as TLS connections always do; for
    /// benchmarks comparing the two.
    pub fn set_raw_tail_reads(&mut self, raw: bool) {
        self.tail.set_raw_reads(raw);
    }

    /// See [`Source::fetched_keys_per_node`] (per cluster master, for
    /// `/metrics`).
    pub fn fetched_keys_per_node(&self) -> Vec<(String, u64)> {
        self.source.fetched_keys_per_node()
    }

    /// Finds the files a snapshot missed because the index does not list
    /// them (see [`Reconciler`]); for the owner of this source to run
    /// after a snapshot, in the background.
    pub fn reconciler(&self) -> Reconciler {
        self.source.reconciler()
    }

    /// See [`Source::set_scan_nested`].
    pub fn set_scan_nested(&mut self, scan_nested: bool) {
        self.source.set_scan_nested(scan_nested);
    }

    /// One section of `INFO`, as `field:value` lines.
    /// In a cluster, the `INFO` of the master serving `meta:events`.
    async fn info_field(&mut self, section: &str, field: &str) -> Result<String, StreamError> {
        let mut connection = self.source.stream_node_connection().await?;
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut connection)
            .await
            .map_err(StreamError::command("INFO"))?;
        text.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
            .ok_or_else(|| StreamError::UnexpectedReply {
                operation: "INFO",
                reply: format!("no {field} in INFO {section}"),
            })
    }
}

impl MetadataSource for RedisSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Redis
    }

    fn describe(&self) -> String {
        self.source.url().to_owned()
    }

    fn bootstrap<'a>(
        &'a mut self,
        projection: &'a mut Projection,
        progress: &'a ProgressFn,
    ) -> BoxFuture<'a, Result<BootstrapReport, SourceError>> {
        Box::pin(async move {
            let report = self
                .source
                .bootstrap(projection, self.strategy, progress)
                .await?;
            self.tail.resume_from(&report.last_event_id);
            self.strategy = Strategy::Snapshot;
            Ok(report)
        })
    }

    fn resume_from(&mut self, event_id: &str) {
        self.tail.resume_from(event_id);
    }

    fn next_batch<'a>(
        &'a mut self,
        relevant: &'a RelevantProperties,
    ) -> BoxFuture<'a, Result<TailEvent, SourceError>> {
        Box::pin(async move { Ok(self.tail.next_batch(relevant).await?) })
    }

    fn fetch_plan<'a>(
        &'a mut self,
        plan: &'a FetchPlan,
    ) -> BoxFuture<'a, Result<FetchedValues, SourceError>> {
        Box::pin(async move { Ok(self.source.fetch_plan(plan).await?) })
    }

    /// `redis run_id=… replid=…`: both change when Redis restarts (a
    /// position taken before may then be gone), so a checkpoint made against
    /// another instance is never trusted.
    fn identity<'a>(&'a mut self) -> BoxFuture<'a, Result<String, SourceError>> {
        Box::pin(async move {
            let run_id = self.info_field("server", "run_id").await?;
            let replication_id = self.info_field("replication", "master_replid").await?;
            Ok(format!("redis run_id={run_id} replid={replication_id}"))
        })
    }

    fn position_reachable<'a>(
        &'a mut self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        Box::pin(async move {
            if StreamId::parse(event_id).is_none() {
                return Ok(false);
            }
            let mut connection = self.source.connection().await?;
            let reachable = match stream_info(&mut connection).await? {
                Some(info) => !info.is_behind(event_id) && !info.lost_after(event_id),
                // No stream: only the very start is still a position.
                None => StreamId::parse(event_id) == Some(StreamId::default()),
            };
            Ok(reachable)
        })
    }

    fn tail_status(&self) -> TailStatus {
        self.tail.status()
    }

    fn set_tail_status(&mut self, status: TailStatus) {
        self.tail.set_status(status);
    }

    fn event_id_order(&self) -> EventIdOrder {
        stream_id_order
    }

    fn topology(&self) -> Option<TopologyReader> {
        Some(self.source.topology_reader())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metafuse_rules::RelevantProperties;
    use metafuse_testkit::{RedisServer, Writer};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identity_and_reachable_positions_tell_a_warm_restart_what_it_may_trust() {
        let mut server = RedisServer::start().unwrap();
        let mut connection = server.client().get_connection().unwrap();
        let first = Writer::new(&mut connection, "")
            .set("a", "title", "Dark")
            .flush()
            .unwrap()
            .unwrap();
        let mut source = RedisSource::connect(&server.url(), "", Strategy::Auto)
            .await
            .unwrap();
        assert_eq!(source.kind(), SourceKind::Redis);
        assert_eq!(source.describe(), server.url());
        let identity = source.identity().await.unwrap();
        assert!(identity.starts_with("redis run_id="), "{identity}");
        assert_eq!(source.identity().await.unwrap(), identity, "stable");

        let mut projection = Projection::new(RelevantProperties::from_names(["title"]));
        let report = source.bootstrap(&mut projection, &|_| {}).await.unwrap();
        assert_eq!(report.last_event_id, first);
        let mut failures = Vec::new();
        for (position, expected) in [
            (first.as_str(), true),
            ("0-0", true),
            ("junk", false),
            ("99999999999999-0", false),
        ] {
            let reachable = source.position_reachable(position).await.unwrap();
            if reachable != expected {
                failures.push(format!("{position}: {reachable}, expected {expected}"));
            }
        }
        assert!(failures.is_empty(), "{failures:?}");

        // Entries after our position deleted: resuming would lose them.
        let second = Writer::new(&mut connection, "")
            .set("a", "title", "Dark 2")
            .flush()
            .unwrap()
            .unwrap();
        let _: u64 = redis::cmd("XDEL")
            .arg(metafuse_state::EVENTS_STREAM)
            .arg(&second)
            .query(&mut connection)
            .unwrap();
        assert!(!source.position_reachable(&first).await.unwrap());

        // Another instance (a restart without persistence): another identity.
        server.restart().unwrap();
        let mut source = RedisSource::connect(&server.url(), "", Strategy::Auto)
            .await
            .unwrap();
        assert_ne!(source.identity().await.unwrap(), identity);
        assert!(!source.position_reachable(&first).await.unwrap());
        let order = source.event_id_order();
        assert_eq!(order(&second, &first), Some(std::cmp::Ordering::Greater));
    }
}
