//! Redis Sentinel: `redis+sentinel://[user:password@]host:port[,host:port…]/master-name`.
//!
//! Every connection is opened to the master the sentinels name at that
//! moment (`SENTINEL get-master-addr-by-name`), so a switch is handled like
//! a lost connection: the tail reconnects (a blocked read on a demoted
//! master is told `UNBLOCKED`; a check on reconnecting sees `ROLE`), resumes
//! from its last id, and resynchronises if the new master's stream does not
//! reach it (replication lag can lose entries).
//!
//! The URL's credentials are the master's; sentinels are asked without them.

use std::sync::{Mutex, PoisonError};

use redis::Value;

use crate::error::StreamError;

/// A `redis+sentinel://` or `rediss+sentinel://` URL taken apart.
#[derive(Debug)]
pub(crate) struct SentinelUrl {
    /// `redis` or `rediss`: how the master is reached.
    scheme: &'static str,
    /// `user:password@` or empty: the master's credentials.
    credentials: String,
    /// The sentinels, `host:port` (26379 when no port is given).
    sentinels: Vec<String>,
    master_name: String,
    /// The master (`host:port`) the sentinels named last, for health.
    last_master: Mutex<Option<String>>,
}

impl PartialEq for SentinelUrl {
    fn eq(&self, other: &Self) -> bool {
        (
            self.scheme,
            &self.credentials,
            &self.sentinels,
            &self.master_name,
        ) == (
            other.scheme,
            &other.credentials,
            &other.sentinels,
            &other.master_name,
        )
    }
}

impl SentinelUrl {
    /// `Ok(None)` when `url` is not a sentinel URL at all.
    pub(crate) fn parse(url: &str) -> Result<Option<Self>, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            ("rediss", rest)
        } else {
            return Ok(None);
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), authority),
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| {
                if host
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
                {
                    host.to_owned()
                } else {
                    format!("{host}:26379")
                }
            })
            .collect();
        let master_name = path.split(['/', '?', '#']).next().unwrap_or("").to_owned();
        if sentinels.is_empty() || master_name.is_empty() {
            return Err("a sentinel URL names host:port[,host:port…]/master-name".to_owned());
        }
        Ok(Some(Self {
            scheme,
            credentials,
            sentinels,
            master_name,
            last_master: Mutex::new(None),
        }))
    }

    /// The URL of the current master, asked of the first sentinel that
    /// knows it.
    pub(crate) async fn master_url(&self) -> Result<String, StreamError> {
        let mut last_error = None;
        for sentinel in &self.sentinels {
            match self.ask(sentinel).await {
                Ok(Some(address)) => {
                    let url = format!("{}://{}{address}/", self.scheme, self.credentials);
                    *self
                        .last_master
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(address);
                    return Ok(url);
                }
                Ok(None) => {}
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| StreamError::UnexpectedReply {
            operation: "SENTINEL get-master-addr-by-name",
            reply: format!("no sentinel knows a master named {:?}", self.master_name),
        }))
    }

    /// The master (`host:port`) the sentinels named last, if asked yet.
    pub(crate) fn last_master(&self) -> Option<String> {
        self.last_master
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn ask(&self, sentinel: &str) -> Result<Option<String>, StreamError> {
        let url = format!("redis://{sentinel}/");
        let connect_error = |cause| StreamError::Connect {
            url: url.clone(),
            cause,
        };
        let client = redis::Client::open(url.as_str()).map_err(connect_error)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(crate::liveness::CONNECT_TIMEOUT))
            .set_response_timeout(Some(crate::liveness::CONNECT_TIMEOUT));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(connect_error)?;
        let reply: Value = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut connection)
            .await
            .map_err(StreamError::command("SENTINEL get-master-addr-by-name"))?;
        let text = |value: &Value| match value {
            Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Value::SimpleString(text) => Some(text.clone()),
            _ => None,
        };
        Ok(match reply {
            Value::Array(items) if items.len() == 2 => text(&items[0])
                .zip(text(&items[1]))
                .map(|(host, port)| format!("{host}:{port}")),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_sentinels_master_and_credentials() {
        assert_eq!(SentinelUrl::parse("redis://a/"), Ok(None));
        let url = SentinelUrl::parse("redis+sentinel://:pw@s1:5000,s2/mymaster")
            .unwrap()
            .unwrap();
        assert_eq!(url.sentinels, ["s1:5000", "s2:26379"]);
        assert_eq!(url.master_name, "mymaster");
        assert_eq!(url.credentials, ":pw@");
        assert!(SentinelUrl::parse("redis+sentinel://s1:5000").is_err());
        assert!(SentinelUrl::parse("rediss+sentinel:///m").is_err());
    }
}
