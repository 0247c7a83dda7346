//! [`MetaCoreSource`]: the `MetadataSource` of meta-core's API mode.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use metafuse_http::{HttpClient, HttpClientConfig};
use metafuse_rules::RelevantProperties;
use metafuse_source::{
    BootstrapMethod, BootstrapReport, BoxFuture, FetchedValues, MetadataSource, Phase, Progress,
    ProgressFn, SourceError, SourceKind, TailBatch, TailEvent, TailStatus, Timings, redact_url,
};
use metafuse_state::{EventCounts, FetchPlan, KeyError, Projection, parse_event_key};
use tokio::sync::oneshot;

use crate::fetch::{fetch_documents, fetch_values, source_error};
use crate::reader::{ReaderStart, ReaderTimings, StreamItem, StreamReader, start_reader};

/// How the API-mode source talks to meta-core.
#[derive(Debug, Clone)]
pub struct MetaCoreConfig {
    /// The meta-core API base URL (`http://meta-core:8180`).
    pub api_url: String,
    /// Key prefix of `file:` keys named by events (`REDIS_PREFIX`).
    pub prefix: String,
    /// Requests in flight at once (documents, values).
    pub concurrency: usize,
    /// No byte on the event stream for this long → reconnect (2 × the 30 s
    /// heartbeat).
    pub watchdog: Duration,
    /// First delay before reconnecting the stream; doubles up to the max.
    pub reconnect_initial_delay: Duration,
    /// Longest delay before reconnecting the stream (a `Retry-After` wins).
    pub reconnect_max_delay: Duration,
    /// How far before now a bootstrap's event stream starts (see
    /// [`MetaCoreSource::bootstrap`]): covers clock skew between us and
    /// meta-core's Redis.
    pub start_margin: Duration,
    /// Most events taken into one tail batch.
    pub max_batch_events: usize,
    /// The HTTP client's timeouts.
    pub http: HttpClientConfig,
}

impl MetaCoreConfig {
    /// Defaults for the meta-core at `api_url`.
    pub fn new(api_url: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into().trim().trim_end_matches('/').to_owned(),
            prefix: String::new(),
            concurrency: 32,
            watchdog: Duration::from_secs(60),
            reconnect_initial_delay: Duration::from_millis(250),
            reconnect_max_delay: Duration::from_secs(5),
            start_margin: Duration::from_secs(10),
            max_batch_events: 10_000,
            http: HttpClientConfig::default(),
        }
    }
}

/// meta-core's HTTP API and event stream as a metadata source (spec §9).
#[derive(Debug)]
pub struct MetaCoreSource {
    config: MetaCoreConfig,
    client: HttpClient,
    reader: Option<StreamReader>,
    /// Items taken from the reader but not yet returned in a batch: kept
    /// across a cancelled `next_batch`.
    pending: Vec<StreamItem>,
    position: String,
    status: TailStatus,
}

impl MetaCoreSource {
    /// A source for the meta-core `config` names; connects lazily.
    pub fn new(config: MetaCoreConfig) -> Self {
        let client = HttpClient::new(HttpClientConfig {
            max_idle_per_host: config.concurrency.max(config.http.max_idle_per_host),
            ..config.http.clone()
        });
        Self {
            config,
            client,
            reader: None,
            pending: Vec::new(),
            position: String::new(),
            status: TailStatus::default(),
        }
    }

    fn events_url(&self) -> String {
        format!("{}/api/events/meta", self.config.api_url)
    }

    /// (Re)starts the stream reader strictly after `start_id`; a
    /// bootstrap's reader ignores a `gap` at its start (see [`ReaderStart`]).
    fn restart_reader(
        &mut self,
        start_id: &str,
        for_bootstrap: bool,
    ) -> oneshot::Receiver<Result<(), metafuse_http::HttpError>> {
        self.reader = None;
        self.pending.clear();
        let (opened_sender, opened) = oneshot::channel();
        self.reader = Some(start_reader(
            self.client.clone(),
            self.events_url(),
            ReaderStart {
                after_id: start_id.to_owned(),
                first_gap_is_harmless: for_bootstrap,
            },
            ReaderTimings {
                watchdog: self.config.watchdog,
                reconnect_initial_delay: self.config.reconnect_initial_delay,
                reconnect_max_delay: self.config.reconnect_max_delay,
            },
            self.status.clone(),
            opened_sender,
        ));
        opened
    }

    /// The relevant `(hash, property)` keys the items name, each once, and
    /// the counts of what was read, skipped and malformed.
    fn relevant_keys(
        &self,
        items: &[StreamItem],
        relevant: &RelevantProperties,
    ) -> (Vec<(String, String)>, EventCounts, Option<String>) {
        let mut counts = EventCounts::default();
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut last_id = None;
        for item in items {
            let StreamItem::Event { id, key } = item else {
                continue;
            };
            counts.n_events += 1;
            last_id = Some(id.clone());
            let Some(key) = key else {
                counts.n_malformed += 1;
                continue;
            };
            match parse_event_key(key, &self.config.prefix) {
                Ok((hash_id, property)) if relevant.is_relevant(property) => {
                    if seen.insert((hash_id.to_owned(), property.to_owned())) {
                        keys.push((hash_id.to_owned(), property.to_owned()));
                    }
                }
                Ok(_) | Err(KeyError::IndexKey { .. } | KeyError::NotAFileKey { .. }) => {
                    counts.n_skipped += 1;
                }
                Err(KeyError::MissingPart { .. }) => counts.n_malformed += 1,
            }
        }
        (keys, counts, last_id)
    }

    async fn bootstrap_inner(
        &mut self,
        projection: &mut Projection,
        progress: &ProgressFn,
    ) -> Result<BootstrapReport, SourceError> {
        let started = Instant::now();
        // The stream first, so that nothing written from now on is lost. Its
        // start is the one place an id is made rather than echoed: meta-core
        // documents ids as `<ms>-<seq>` of its Redis clock, and a start a
        // margin in the past is complete even with some clock skew (`$`
        // could miss entries). Events within the margin are re-read: harmless.
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| since.as_millis() as u64)
            .unwrap_or_default();
        let start_id = format!(
            "{}-0",
            now_ms.saturating_sub(self.config.start_margin.as_millis() as u64)
        );
        let opened = self.restart_reader(&start_id, true);
        match opened.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(source_error(error)),
            Err(_) => {
                return Err(SourceError::Connection {
                    message: "meta-core event stream reader stopped".to_owned(),
                });
            }
        }
        let decide = started.elapsed();

        let load_started = Instant::now();
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Index {
            #[serde(default)]
            hash_ids: Vec<String>,
        }
        let index: Index = self
            .client
            .get_json(&format!("{}/meta", self.config.api_url))
            .await
            .map_err(source_error)?;
        let total = index.hash_ids.len() as u64;
        let relevant = projection.relevant().clone();
        let mut n_fetched = 0u64;
        let mut done = 0u64;
        const DOCUMENTS_PER_STEP: usize = 2048;
        for chunk in index.hash_ids.chunks(DOCUMENTS_PER_STEP) {
            let documents = fetch_documents(
                &self.client,
                &self.config.api_url,
                chunk.to_vec(),
                self.config.concurrency,
            )
            .await?;
            let mut values = FetchedValues::default();
            for (hash_id, document) in &documents {
                for (property, value) in &document.metadata {
                    if !relevant.is_relevant(property) {
                        continue;
                    }
                    match value.as_str() {
                        Some(text) => values.push(hash_id, property, Some(text)),
                        None => values.record_malformed(),
                    }
                }
            }
            n_fetched += values.len() as u64;
            projection.apply_batch(values.iter());
            done += chunk.len() as u64;
            progress(Progress {
                phase: Phase::Snapshot,
                done,
                total,
            });
        }
        let load = load_started.elapsed();

        // Events received meanwhile: re-read the keys they name.
        let catch_up_started = Instant::now();
        let mut caught_up = Vec::new();
        if let Some(reader) = &mut self.reader {
            while let Ok(item) = reader.items.try_recv() {
                caught_up.push(item);
            }
        }
        let (keys, counts, last_id) = self.relevant_keys(&caught_up, &relevant);
        let values = fetch_values(
            &self.client,
            &self.config.api_url,
            keys,
            self.config.concurrency,
        )
        .await?;
        n_fetched += values.len() as u64;
        projection.apply_batch(values.iter());
        progress(Progress {
            phase: Phase::CatchUp,
            done: counts.n_events,
            total: counts.n_events,
        });
        self.position = last_id.unwrap_or(start_id);
        projection.record_events(counts, &self.position);
        let elapsed = started.elapsed();
        projection.record_bootstrap(BootstrapMethod::METACORE_BOOTSTRAP.name(), elapsed);
        Ok(BootstrapReport {
            strategy_used: BootstrapMethod::METACORE_BOOTSTRAP,
            reason: format!(
                "meta-core API mode: {total} documents read with {} requests in flight, {} events during the bootstrap",
                self.config.concurrency, counts.n_events
            ),
            last_event_id: self.position.clone(),
            n_events: counts.n_events,
            n_fetched,
            n_skipped: counts.n_skipped,
            n_malformed: counts.n_malformed + values.n_malformed(),
            timings: Timings {
                decide,
                load,
                catch_up: catch_up_started.elapsed(),
            },
            elapsed,
        })
    }

    async fn next_batch_inner(
        &mut self,
        relevant: &RelevantProperties,
    ) -> Result<TailEvent, SourceError> {
        if self.reader.is_none() {
            let position = self.position.clone();
            let _opened = self.restart_reader(&position, false);
        }
        let Some(reader) = &mut self.reader else {
            return Err(SourceError::Connection {
                message: "meta-core event stream reader missing".to_owned(),
            });
        };
        if self.pending.is_empty() {
            match reader.items.recv().await {
                Some(item) => self.pending.push(item),
                None => {
                    self.reader = None;
                    return Err(SourceError::Connection {
                        message: format!(
                            "meta-core event stream reader of {} stopped",
                            self.config.api_url
                        ),
                    });
                }
            }
        }
        while self.pending.len() < self.config.max_batch_events {
            match reader.items.try_recv() {
                Ok(item) => self.pending.push(item),
                Err(_) => break,
            }
        }
        if self.pending.contains(&StreamItem::Gap) {
            // Entries after our position were trimmed: only a bootstrap can
            // tell the current state. The reader stops until then.
            self.pending.clear();
            self.reader = None;
            return Ok(TailEvent::Resync {
                last_event_id: self.position.clone(),
            });
        }
        let (keys, counts, last_id) = self.relevant_keys(&self.pending, relevant);
        let values = fetch_values(
            &self.client,
            &self.config.api_url,
            keys,
            self.config.concurrency,
        )
        .await?;
        self.pending.clear();
        if let Some(last_id) = last_id {
            self.position = last_id;
        }
        self.status.record_entries_read();
        Ok(TailEvent::Batch(TailBatch {
            values,
            last_event_id: self.position.clone(),
            counts,
        }))
    }

    async fn fetch_plan_inner(&mut self, plan: &FetchPlan) -> Result<FetchedValues, SourceError> {
        if plan.is_empty() {
            return Ok(FetchedValues::default());
        }
        let wanted: HashSet<&str> = plan.properties.iter().map(String::as_str).collect();
        let documents = fetch_documents(
            &self.client,
            &self.config.api_url,
            plan.hash_ids.clone(),
            self.config.concurrency,
        )
        .await?;
        let mut values = FetchedValues::default();
        for (hash_id, document) in &documents {
            for (property, value) in &document.metadata {
                let nested = plan.nested_prefixes.iter().any(|prefix| {
                    property
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
                });
                if !wanted.contains(property.as_str()) && !nested {
                    continue;
                }
                match value.as_str() {
                    Some(text) => values.push(hash_id, property, Some(text)),
                    None => values.record_malformed(),
                }
            }
        }
        Ok(values)
    }
}

impl MetadataSource for MetaCoreSource {
    fn kind(&self) -> SourceKind {
        SourceKind::MetaCore
    }

    fn describe(&self) -> String {
        format!("meta-core at {}", redact_url(&self.config.api_url))
    }

    /// Opens the event stream first (from a start a margin in the past, so
    /// nothing written from then on is missed), reads `GET /meta` and every
    /// document with bounded concurrency keeping only relevant properties,
    /// then re-reads the keys named by the events received meanwhile.
    fn bootstrap<'a>(
        &'a mut self,
        projection: &'a mut Projection,
        progress: &'a ProgressFn,
    ) -> BoxFuture<'a, Result<BootstrapReport, SourceError>> {
        Box::pin(self.bootstrap_inner(projection, progress))
    }

    fn resume_from(&mut self, event_id: &str) {
        self.position = event_id.to_owned();
        self.reader = None;
        self.pending.clear();
    }

    fn next_batch<'a>(
        &'a mut self,
        relevant: &'a RelevantProperties,
    ) -> BoxFuture<'a, Result<TailEvent, SourceError>> {
        Box::pin(self.next_batch_inner(relevant))
    }

    fn fetch_plan<'a>(
        &'a mut self,
        plan: &'a FetchPlan,
    ) -> BoxFuture<'a, Result<FetchedValues, SourceError>> {
        Box::pin(self.fetch_plan_inner(plan))
    }

    /// The API base URL: a position only means something to the meta-core
    /// (and its Redis) that gave it.
    fn identity<'a>(&'a mut self) -> BoxFuture<'a, Result<String, SourceError>> {
        Box::pin(async move { Ok(format!("meta-core {}", self.config.api_url)) })
    }

    /// meta-core cannot be asked without resuming; a trimmed position shows
    /// as a `gap` on the first read, which turns into
    /// [`TailEvent::Resync`]. So any id it gave is worth trying.
    fn position_reachable<'a>(
        &'a mut self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SourceError>> {
        Box::pin(async move { Ok(!event_id.trim().is_empty()) })
    }

    fn tail_status(&self) -> TailStatus {
        self.status.clone()
    }

    fn set_tail_status(&mut self, status: TailStatus) {
        self.status = status;
    }
}
