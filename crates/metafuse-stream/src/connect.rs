//! Every Redis connection of metafuse is opened here, from one client and
//! one redacted URL, so timeouts and error messages are decided once.

use std::sync::Arc;
use std::time::Duration;

use metafuse_source::{SourceNode, SourceTopology};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::cluster::{ClusterFetcher, ClusterUrl, StateConnection, Topology};
use crate::error::StreamError;
use crate::resp::RespConnection;
use crate::sentinel::SentinelUrl;

/// Opens connections to one Redis.
#[derive(Clone)]
pub(crate) struct Connector {
    client: redis::Client,
    /// The URL with any secret replaced by `***`, for messages.
    redacted_url: String,
    /// Set for a `redis+cluster://` URL: `client` is then its first seed.
    cluster: Option<Arc<Topology>>,
    /// Set for a `redis+sentinel://` URL: every connection goes to the
    /// master the sentinels name then (`client` is unused).
    sentinel: Option<Arc<SentinelUrl>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Connector")
            .field("url", &self.redacted_url)
            .finish()
    }
}

impl Connector {
    /// A connector for `url` (`redis://` or `rediss://`, password in the URL).
    /// `redis+cluster://` or `rediss+cluster://host:port[,host:port…]`: a
    /// Redis Cluster reached through any of those seed nodes.
    pub(crate) fn new(url: &str) -> Result<Self, StreamError> {
        // `rediss://`: rustls needs a process-wide crypto provider; an
        // error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redacted_url = metafuse_source::redact_url(url);
        let invalid = |cause| StreamError::InvalidUrl {
            url: redacted_url.clone(),
            cause,
        };
        let cluster_url = ClusterUrl::parse(url).map_err(|reason| {
            invalid(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "invalid cluster url",
                reason,
            )))
        })?;
        let sentinel_url = SentinelUrl::parse(url).map_err(|reason| {
            invalid(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "invalid sentinel url",
                reason,
            )))
        })?;
        let (client, cluster) = match cluster_url {
            Some(cluster_url) => {
                let first_seed = cluster_url.seed_urls().swap_remove(0);
                let client = redis::Client::open(first_seed).map_err(invalid)?;
                (client, Some(Arc::new(Topology::new(cluster_url))))
            }
            None if sentinel_url.is_some() => (
                redis::Client::open("redis://127.0.0.1/").map_err(invalid)?,
                None,
            ),
            None => (redis::Client::open(url).map_err(invalid)?, None),
        };
        // TCP keepalive on every socket: a peer that vanished is noticed
        // even while no command waits (see `liveness`).
        let client = crate::liveness::with_keepalive(&client);
        Ok(Self {
            client,
            redacted_url,
            cluster,
            sentinel: sentinel_url.map(Arc::new),
        })
    }

    /// The client of the Redis to connect to now: for Sentinel, the current
    /// master (asked afresh, so a reconnect follows a switch).
    async fn current_client(&self) -> Result<redis::Client, StreamError> {
        let Some(sentinel) = &self.sentinel else {
            return Ok(self.client.clone());
        };
        let master_url = sentinel.master_url().await?;
        let client =
            redis::Client::open(master_url.as_str()).map_err(|cause| StreamError::InvalidUrl {
                url: metafuse_source::redact_url(&master_url),
                cause,
            })?;
        Ok(crate::liveness::with_keepalive(&client))
    }

    /// For Sentinel: changes whenever the sentinels announce that our
    /// master switched (see `sentinel.rs`); `None` otherwise.
    pub(crate) fn master_switches(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.sentinel.as_ref().map(|sentinel| sentinel.switches())
    }

    /// The cluster's slot table, if this is a cluster.
    pub(crate) fn topology(&self) -> Option<&Arc<Topology>> {
        self.cluster.as_ref()
    }

    /// The connector of the node serving `key`: this one unless a cluster,
    /// whose slot table is read afresh (callers connect after a failure, when
    /// a failover may have moved the slot).
    pub(crate) async fn for_key(&self, key: &str) -> Result<Connector, StreamError> {
        match &self.cluster {
            Some(topology) => {
                if let Err(error) = topology.refresh().await {
                    tracing::debug!(%error, "cannot refresh the cluster's slots; using the last known");
                }
                topology.node_for_key(key).await
            }
            None => Ok(self.clone()),
        }
    }

    /// The tail's connection for stream checks and fetches: to the master
    /// serving `meta:events` in a cluster (resolved afresh), fetches fanned
    /// out to every master.
    pub(crate) async fn stream_state(
        &self,
        response_timeout: Duration,
    ) -> Result<StateConnection, StreamError> {
        let connection = self
            .for_key(metafuse_state::EVENTS_STREAM)
            .await?
            .multiplexed(Some(response_timeout))
            .await?;
        Ok(match &self.cluster {
            Some(topology) => StateConnection::StreamNode {
                connection,
                fetcher: Arc::new(tokio::sync::Mutex::new(ClusterFetcher::new(
                    topology.clone(),
                    response_timeout,
                ))),
            },
            None => StateConnection::Single(connection),
        })
    }

    /// The connection for keyed commands and small fetches (see
    /// [`StateConnection`]).
    pub(crate) async fn state(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<StateConnection, StreamError> {
        match &self.cluster {
            Some(topology) => StateConnection::cluster(topology.clone(), response_timeout).await,
            None => Ok(StateConnection::Single(
                self.multiplexed(response_timeout).await?,
            )),
        }
    }

    /// How this Redis is deployed and what each node served (see
    /// [`SourceTopology`]): a cluster's masters with their fetch counts, a
    /// sentinel's current master, or the one node.
    pub(crate) fn topology_report(&self) -> SourceTopology {
        if let Some(topology) = &self.cluster {
            return SourceTopology {
                mode: "cluster",
                nodes: topology.node_report(),
            };
        }
        if let Some(sentinel) = &self.sentinel {
            return SourceTopology {
                mode: "sentinel",
                nodes: sentinel
                    .last_master()
                    .into_iter()
                    .map(|address| SourceNode {
                        address,
                        role: "master",
                        fetched_keys: None,
                    })
                    .collect(),
            };
        }
        SourceTopology {
            mode: "single",
            nodes: vec![SourceNode {
                address: self.client.get_connection_info().addr().to_string(),
                role: "master",
                fetched_keys: None,
            }],
        }
    }

    /// The URL, secret redacted.
    pub(crate) fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// A multiplexed connection whose replies time out after
    /// `response_timeout` (`None`: never).
    pub(crate) async fn multiplexed(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, StreamError> {
        // A frozen proxy accepts connections and never answers: bound the
        // handshake too.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(crate::liveness::CONNECT_TIMEOUT))
            .set_response_timeout(response_timeout);
        self.current_client()
            .await?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|cause| self.connect_error(cause))
    }

    /// A connection for bulk reads: a raw RESP one where possible (decoding
    /// stream pages and values straight from the socket buffer is several
    /// times cheaper), the redis crate's for TLS.
    pub(crate) async fn bulk(
        &self,
        response_timeout: Duration,
    ) -> Result<BulkConnection, StreamError> {
        if let Some(topology) = &self.cluster {
            let fetcher = ClusterFetcher::new(topology.clone(), response_timeout);
            return Ok(BulkConnection::Cluster(Arc::new(tokio::sync::Mutex::new(
                fetcher,
            ))));
        }
        let raw = RespConnection::open(&self.current_client().await?, response_timeout)
            .await
            .map_err(|cause| self.connect_error(cause))?;
        Ok(match raw {
            Some(raw) => BulkConnection::Raw(raw),
            None => BulkConnection::Multiplexed(self.multiplexed(Some(response_timeout)).await?),
        })
    }

    fn connect_error(&self, cause: redis::RedisError) -> StreamError {
        StreamError::Connect {
            url: self.redacted_url.clone(),
            cause,
        }
    }
}

/// A connection for the bulk reads of a bootstrap (see [`Connector::bulk`]).
pub(crate) enum BulkConnection {
    Raw(RespConnection),
    Multiplexed(MultiplexedConnection),
    /// Fetches only: one connection per master of a cluster.
    Cluster(Arc<tokio::sync::Mutex<ClusterFetcher>>),
}
