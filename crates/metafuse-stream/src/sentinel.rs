//! Redis Sentinel: `redis+sentinel://[user:password@]host:port[,host:port…]/master-name`.
//!
//! Every connection is opened to the master the sentinels name at that
//! moment (`SENTINEL get-master-addr-by-name`), so a switch is handled like
//! a lost connection: the tail reconnects, resumes from its last id, and
//! resynchronises if the new master's stream does not reach it (replication
//! lag can lose entries).
//!
//! A switch is learnt from the sentinels themselves: once a master was
//! resolved, a task subscribes to `+switch-master` on the first sentinel
//! that answers (the next one when it goes away) and tells the tail at once
//! ([`SentinelUrl::switches`]), rather than waiting for the old master to
//! drop our connections (sentinels kill clients of the instances they
//! reconfigure, but a partitioned old master never hears of it).
//!
//! The URL's credentials are the master's; sentinels are asked without them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::watch;

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
    /// `#insecure` (TLS to the master without certificate verification) or empty.
    fragment: &'static str,
    /// The master (`host:port`) the sentinels named last, for health.
    last_master: Arc<Mutex<Option<String>>>,
    /// Bumped on every `+switch-master` of our master a sentinel announces.
    switches: Arc<watch::Sender<u64>>,
    /// Whether a sentinel's `+switch-master` feed is subscribed now.
    subscribed: Arc<watch::Sender<bool>>,
    /// The task following `+switch-master`, once started; stopped on drop.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Pause before subscribing again after every sentinel failed.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

impl Drop for SentinelUrl {
    fn drop(&mut self) {
        if let Some(watcher) = self
            .watcher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            watcher.abort();
        }
    }
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
            fragment: crate::cluster::insecure_fragment(url),
            last_master: Arc::new(Mutex::new(None)),
            switches: Arc::new(watch::Sender::new(0)),
            subscribed: Arc::new(watch::Sender::new(false)),
            watcher: Mutex::new(None),
        }))
    }

    /// The URL of the current master, asked of the first sentinel that
    /// knows it.
    pub(crate) async fn master_url(&self) -> Result<String, StreamError> {
        let mut last_error = None;
        for sentinel in &self.sentinels {
            match self.ask(sentinel).await {
                Ok(Some(address)) => {
                    let url = format!(
                        "{}://{}{address}/{}",
                        self.scheme, self.credentials, self.fragment
                    );
                    *self
                        .last_master
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(address);
                    self.watch_switches();
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

    /// Changes on every `+switch-master` of our master that a sentinel
    /// announces (once a master was resolved, see the module docs).
    pub(crate) fn switches(&self) -> watch::Receiver<u64> {
        self.switches.subscribe()
    }

    /// Whether a sentinel's `+switch-master` feed is subscribed now.
    #[cfg(test)]
    pub(crate) fn subscribed(&self) -> watch::Receiver<bool> {
        self.subscribed.subscribe()
    }

    /// Starts the task following `+switch-master`, unless running.
    fn watch_switches(&self) {
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        if watcher.is_some() {
            return;
        }
        let sentinels = self.sentinels.clone();
        let master_name = self.master_name.clone();
        let last_master = self.last_master.clone();
        let switches = self.switches.clone();
        let subscribed = self.subscribed.clone();
        *watcher = Some(tokio::spawn(async move {
            loop {
                for sentinel in &sentinels {
                    let followed = follow_switches(
                        sentinel,
                        &master_name,
                        &last_master,
                        &switches,
                        &subscribed,
                    )
                    .await;
                    subscribed.send_replace(false);
                    if let Err(error) = followed {
                        tracing::debug!(%error, sentinel, "lost the sentinel's +switch-master feed");
                    }
                }
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            }
        }));
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

/// Subscribes to `+switch-master` on `sentinel` and, for every switch of
/// `master_name`, records the new master and bumps `switches`. Returns when
/// the subscription ends (the sentinel went away).
async fn follow_switches(
    sentinel: &str,
    master_name: &str,
    last_master: &Mutex<Option<String>>,
    switches: &watch::Sender<u64>,
    subscribed: &watch::Sender<bool>,
) -> Result<(), StreamError> {
    let url = format!("redis://{sentinel}/");
    let connect_error = |cause| StreamError::Connect {
        url: url.clone(),
        cause,
    };
    let client =
        crate::liveness::with_keepalive(&redis::Client::open(url.as_str()).map_err(connect_error)?);
    let mut pubsub =
        tokio::time::timeout(crate::liveness::CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| {
                connect_error(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer from the sentinel",
                )))
            })?
            .map_err(connect_error)?;
    pubsub
        .subscribe("+switch-master")
        .await
        .map_err(StreamError::command("SUBSCRIBE +switch-master"))?;
    subscribed.send_replace(true);
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let Ok(payload) = message.get_payload::<String>() else {
            continue;
        };
        if let Some(address) = switched_master(&payload, master_name) {
            tracing::info!(
                master = master_name,
                new_master = address,
                "the sentinels switched master"
            );
            *last_master.lock().unwrap_or_else(PoisonError::into_inner) = Some(address);
            switches.send_modify(|n_switches| *n_switches += 1);
        }
    }
    Ok(())
}

/// The new master (`host:port`) of a `+switch-master` message
/// (`<name> <old-ip> <old-port> <new-ip> <new-port>`) about `master_name`.
fn switched_master(payload: &str, master_name: &str) -> Option<String> {
    let fields: Vec<&str> = payload.split_whitespace().collect();
    match fields.as_slice() {
        [name, _, _, host, port] if *name == master_name => Some(format!("{host}:{port}")),
        _ => None,
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sentinel_failover_is_announced_with_the_new_master() {
        let sentinels = metafuse_testkit::RedisSentinels::start(None).unwrap();
        let url = SentinelUrl::parse(&sentinels.url()).unwrap().unwrap();
        let old_master = sentinels.master_port().unwrap();
        assert_eq!(
            url.master_url().await.unwrap(),
            format!("redis://127.0.0.1:{old_master}/")
        );
        assert_eq!(url.last_master(), Some(format!("127.0.0.1:{old_master}")));
        let mut switches = url.switches();
        // The feed is subscribed by a task: await it, or the switch could
        // be announced before anyone listens.
        url.subscribed()
            .wait_for(|subscribed| *subscribed)
            .await
            .unwrap();
        let new_master = tokio::task::spawn_blocking(move || {
            sentinels.fail_over().map(|port| (sentinels, port))
        });
        switches.changed().await.unwrap();
        let (_sentinels, new_master) = new_master.await.unwrap().unwrap();
        assert_ne!(new_master, old_master);
        assert_eq!(url.last_master(), Some(format!("127.0.0.1:{new_master}")));
    }

    #[test]
    fn switch_messages_name_the_new_master_of_ours_only() {
        assert_eq!(
            switched_master("mymaster 127.0.0.1 6379 10.0.0.2 6380", "mymaster").as_deref(),
            Some("10.0.0.2:6380")
        );
        assert_eq!(
            switched_master("other 127.0.0.1 6379 10.0.0.2 6380", "mymaster"),
            None
        );
        assert_eq!(switched_master("mymaster 1 2", "mymaster"), None);
    }
}
