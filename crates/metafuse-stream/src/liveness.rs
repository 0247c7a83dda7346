//! Is the tail still live, and does the stream still lead on from our
//! position? A connection can stop answering while staying open (a frozen
//! proxy, a half-dead NAT), and a Redis can lose entries we have not read
//! without a new entry ever arriving to tell us (`FLUSHALL`, `XTRIM` to
//! empty, `XDEL` of unread entries, a restart from an older file). The tail
//! asks these questions after every reconnect and every idle read.

use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionLike;

use crate::entries::StreamId;
use crate::error::StreamError;
use crate::info::{StreamInfo, stream_info};
use metafuse_state::EVENTS_STREAM;

/// Added to the `XREAD BLOCK` time to get the blocking connection's
/// response timeout. Redis answers a timed-out `XREAD` within a millisecond
/// of the block time; 3 s covers scheduling, a busy event loop (a fork for
/// `BGSAVE`, a slow `KEYS`) and a slow network, while a frozen peer is
/// still noticed within seconds. Reporting a false "not live" only costs a
/// reconnect and a verification, never data.
pub(crate) const RESPONSE_MARGIN: Duration = Duration::from_secs(3);
/// How long a verification (or the idle ping it stands for) may take on the
/// fetch connection, whose own timeout is long because `MGET` replies can
/// be large.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long opening a connection (TCP, TLS and the handshake) may take: a
/// frozen proxy accepts connections and then never answers.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive: first probe after 15 s of silence, then every 5 s, and
/// the kernel gives up after 3 unanswered ones. Sent data unacknowledged
/// for 30 s (`TCP_USER_TIMEOUT`) also closes the socket. These catch a
/// peer that vanished without a reset (a rebooted host, a dropped NAT
/// entry) even when no command is waiting.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// `client` with TCP keepalive and a user timeout on every socket it opens.
pub(crate) fn with_keepalive(client: &redis::Client) -> redis::Client {
    use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(USER_TIMEOUT);
    let info = client
        .get_connection_info()
        .clone()
        .set_tcp_settings(settings);
    // The info came from a working client; should it be refused anyway, the
    // plain client still works, only without keepalive.
    redis::Client::open(info).unwrap_or_else(|_| client.clone())
}

/// Which Redis process, and which history of the data set, answers: a
/// different `run_id` is a restart, a different `master_replid` a new
/// replication history (a failover, a replica promoted, `FLUSHALL` on a
/// replica's master). Either may have lost what we read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerIdentity {
    pub(crate) run_id: String,
    pub(crate) replication_id: String,
}

/// Why the stream no longer leads on from our position, if it does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Continuity {
    /// Every entry after our position is still there.
    Continuous,
    /// Entries after our position were lost (the reason, for logs and health).
    Broken(String),
}

/// Whether `info` (the stream as it is now, `None` when it does not exist)
/// still holds every entry after `position`. `entries_added_at_position`
/// is the stream's `entries-added` count at our position when known: a
/// stream that has since added fewer entries in all was recreated.
pub(crate) fn stream_continuity(
    info: Option<&StreamInfo>,
    position: &str,
    entries_added_at_position: Option<u64>,
) -> Continuity {
    let at_start = StreamId::parse(position).unwrap_or_default() == StreamId::default();
    let Some(info) = info else {
        return if at_start {
            Continuity::Continuous
        } else {
            Continuity::Broken(format!(
                "meta:events is gone (flushed or deleted) while we were at {position}"
            ))
        };
    };
    if info.is_behind(position) {
        return Continuity::Broken(format!(
            "meta:events ends at {} before our position {position} (flushed and rewritten, or restarted without our entries)",
            info.last_generated_id
        ));
    }
    if let (Some(added), Some(at_position)) = (info.entries_added, entries_added_at_position)
        && added < at_position
    {
        return Continuity::Broken(format!(
            "meta:events was recreated ({added} entries added in all, {at_position} at our position {position})"
        ));
    }
    if info.lost_after(position) || emptied_past(info, position) {
        return Continuity::Broken(format!(
            "meta:events lost entries after our position {position} (trimmed or deleted before we read them)"
        ));
    }
    Continuity::Continuous
}

/// A stream trimmed to nothing reports `recorded-first-entry-id` `0-0` and
/// no first entry, so the "oldest entry left is newer than us" test cannot
/// see it; entries were removed and the stream went on past us, so those
/// after our position were among them.
fn emptied_past(info: &StreamInfo, position: &str) -> bool {
    let removed_any = info.entries_added.is_some_and(|added| added > info.length);
    let position = StreamId::parse(position).unwrap_or_default();
    let stream_end = StreamId::parse(&info.last_generated_id).unwrap_or_default();
    info.length == 0 && removed_any && stream_end > position
}

/// The stream's state and the server's identity, with [`CHECK_TIMEOUT`]:
/// the fetch connection's ping while idle.
pub(crate) async fn observe(
    connection: &mut (impl ConnectionLike + Send),
) -> Result<(Option<StreamInfo>, ServerIdentity), StreamError> {
    let work = async {
        let info = stream_info(connection).await?;
        let identity = server_identity(connection).await?;
        Ok::<_, StreamError>((info, identity))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(timed_out("XINFO STREAM meta:events / INFO", CHECK_TIMEOUT)),
    }
}

/// After the server's identity changed, whether the entry at our position
/// is still there: then the new process has the data we had read up to it
/// (the stream checks cover what follows); otherwise it lost it.
pub(crate) async fn holds_entry(
    connection: &mut (impl ConnectionLike + Send),
    position: &str,
) -> Result<bool, StreamError> {
    if StreamId::parse(position).unwrap_or_default() == StreamId::default() {
        return Ok(true);
    }
    let mut command = redis::cmd("XRANGE");
    command
        .arg(EVENTS_STREAM)
        .arg(position)
        .arg(position)
        .arg("COUNT")
        .arg(1);
    let work = command.query_async::<Value>(connection);
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(Value::Array(entries))) => Ok(!entries.is_empty()),
        Ok(Ok(_)) => Ok(false),
        Ok(Err(cause)) => Err(StreamError::Command {
            operation: "XRANGE meta:events",
            cause,
        }),
        Err(_) => Err(timed_out("XRANGE meta:events", CHECK_TIMEOUT)),
    }
}

/// A response timeout, as a connection error (retried after reconnecting).
pub(crate) fn timed_out(operation: &'static str, after: Duration) -> StreamError {
    StreamError::Command {
        operation,
        cause: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} ms", after.as_millis()),
        )
        .into(),
    }
}

async fn server_identity(
    connection: &mut (impl ConnectionLike + Send),
) -> Result<ServerIdentity, StreamError> {
    let server = info_section(connection, "server").await?;
    let replication = info_section(connection, "replication").await?;
    Ok(ServerIdentity {
        run_id: info_field(&server, "run_id").unwrap_or_default().to_owned(),
        replication_id: info_field(&replication, "master_replid")
            .unwrap_or_default()
            .to_owned(),
    })
}

async fn info_section(
    connection: &mut (impl ConnectionLike + Send),
    section: &'static str,
) -> Result<String, StreamError> {
    let reply: Value = redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .map_err(StreamError::command("INFO"))?;
    Ok(match reply {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::VerbatimString { text, .. } => text,
        Value::SimpleString(text) => text,
        _ => String::new(),
    })
}

/// `name:value` lines of an `INFO` reply.
fn info_field<'text>(info: &'text str, name: &str) -> Option<&'text str> {
    info.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        (field == name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(length: u64, added: u64, last: &str, first: &str) -> StreamInfo {
        StreamInfo {
            length,
            last_generated_id: last.into(),
            entries_added: Some(added),
            max_deleted_entry_id: Some("0-0".into()),
            first_entry_id: Some(first.into()),
        }
    }

    #[test]
    fn a_stream_trimmed_to_nothing_past_us_is_broken() {
        // XTRIM MAXLEN 0 after entries we never read.
        let emptied = info(0, 12, "12-0", "0-0");
        assert_ne!(
            stream_continuity(Some(&emptied), "10-0", None),
            Continuity::Continuous
        );
        // Emptied, but we had read everything: nothing lost.
        assert_eq!(
            stream_continuity(Some(&emptied), "12-0", Some(12)),
            Continuity::Continuous
        );
    }

    #[test]
    fn a_missing_or_shorter_stream_is_broken_unless_we_are_at_the_start() {
        assert_eq!(stream_continuity(None, "0-0", None), Continuity::Continuous);
        assert_ne!(stream_continuity(None, "5-0", None), Continuity::Continuous);
        let rewritten = info(3, 3, "3-0", "1-0");
        assert_ne!(
            stream_continuity(Some(&rewritten), "5-0", None),
            Continuity::Continuous
        );
        assert_eq!(
            stream_continuity(Some(&rewritten), "3-0", None),
            Continuity::Continuous
        );
        // Flushed and rewritten with higher ids: only the count tells.
        let recreated = info(3, 3, "900-0", "800-0");
        assert_ne!(
            stream_continuity(Some(&recreated), "5-0", Some(40)),
            Continuity::Continuous
        );
    }

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let text = "# Server\r\nrun_id_x:1\r\nrun_id:abc\r\n";
        assert_eq!(info_field(text, "run_id"), Some("abc"));
        assert_eq!(info_field(text, "master_replid"), None);
    }
}
