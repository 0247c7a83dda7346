//! Every Redis connection of metafuse is opened here, from one client and
//! one redacted URL, so timeouts and error messages are decided once.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::error::StreamError;
use crate::resp::RespConnection;

/// Opens connections to one Redis.
#[derive(Clone)]
pub(crate) struct Connector {
    client: redis::Client,
    /// The URL with any secret replaced by `***`, for messages.
    redacted_url: String,
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
    pub(crate) fn new(url: &str) -> Result<Self, StreamError> {
        let redacted_url = metafuse_source::redact_url(url);
        let client = redis::Client::open(url).map_err(|cause| StreamError::InvalidUrl {
            url: redacted_url.clone(),
            cause,
        })?;
        // TCP keepalive on every socket: a peer that vanished is noticed
        // even while no command waits (see `liveness`).
        let client = crate::liveness::with_keepalive(&client);
        Ok(Self {
            client,
            redacted_url,
        })
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
        self.client
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
        let raw = RespConnection::open(&self.client, response_timeout)
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
}
