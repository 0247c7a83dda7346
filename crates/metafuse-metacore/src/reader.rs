//! The event-stream reader: one background task that holds the SSE
//! connection, reconnects with backoff and `Last-Event-ID`, honours
//! `Retry-After`, and watches the connection (no byte for the watchdog
//! time → reconnect). It hands events to the source through a channel, so
//! the source's `next_batch` stays cancel-safe and events received during a
//! bootstrap are buffered.

use std::time::Duration;

use hyper::Method;
use metafuse_http::{HttpClient, HttpError};
use metafuse_source::TailStatus;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::sse::SseParser;

/// What the stream said, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamItem {
    /// An entry: its opaque id and the key it names (if its data had one).
    Event { id: String, key: Option<String> },
    /// `event: gap`: entries after our position were trimmed.
    Gap,
}

/// Timings of the reader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReaderTimings {
    pub(crate) watchdog: Duration,
    pub(crate) reconnect_initial_delay: Duration,
    pub(crate) reconnect_max_delay: Duration,
}

/// A running reader; stops when dropped.
#[derive(Debug)]
pub(crate) struct StreamReader {
    pub(crate) items: mpsc::UnboundedReceiver<StreamItem>,
    task: JoinHandle<()>,
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a reader starts and what a `gap` at its start means.
#[derive(Debug, Clone)]
pub(crate) struct ReaderStart {
    /// Read strictly after this id.
    pub(crate) after_id: String,
    /// A bootstrap's reader: a `gap` on its first connection only says the
    /// start was older than the retained stream, and the replay from the
    /// oldest entry that follows is all the bootstrap needs. A reader
    /// resuming a known position must report it.
    pub(crate) first_gap_is_harmless: bool,
}

/// Starts reading `events_url` from `start`. `opened` learns the outcome of
/// the first connection attempt.
pub(crate) fn start_reader(
    client: HttpClient,
    events_url: String,
    start: ReaderStart,
    timings: ReaderTimings,
    status: TailStatus,
    opened: oneshot::Sender<Result<(), HttpError>>,
) -> StreamReader {
    let (sender, items) = mpsc::unbounded_channel();
    let task = tokio::spawn(read_forever(
        client, events_url, start, timings, status, sender, opened,
    ));
    StreamReader { items, task }
}

async fn read_forever(
    client: HttpClient,
    events_url: String,
    start: ReaderStart,
    timings: ReaderTimings,
    status: TailStatus,
    sender: mpsc::UnboundedSender<StreamItem>,
    opened: oneshot::Sender<Result<(), HttpError>>,
) {
    let mut last_id = start.after_id;
    let mut gap_is_harmless = start.first_gap_is_harmless;
    let mut opened = Some(opened);
    let mut delay = timings.reconnect_initial_delay;
    loop {
        let headers = [
            ("accept", "text/event-stream"),
            ("last-event-id", last_id.as_str()),
        ];
        let outcome = client.open(Method::GET, &events_url, &headers).await;
        let retry_after = match outcome {
            Ok(mut response) if response.status == 200 => {
                status.record_connection();
                // An open stream is live: meta-core's keep-alives are watched
                // below, so a silent peer turns this back off.
                status.set_not_live(None);
                if let Some(opened) = opened.take() {
                    let _ = opened.send(Ok(()));
                }
                delay = timings.reconnect_initial_delay;
                let mut parser = SseParser::default();
                loop {
                    let chunk = tokio::time::timeout(timings.watchdog, response.next_chunk()).await;
                    let chunk = match chunk {
                        Err(_silent) => {
                            tracing::warn!(
                                url = %events_url,
                                "meta-core event stream silent for {:?}; reconnecting",
                                timings.watchdog
                            );
                            break;
                        }
                        Ok(Ok(Some(chunk))) => chunk,
                        Ok(Ok(None)) => {
                            tracing::info!(url = %events_url, "meta-core closed the event stream; reconnecting");
                            break;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "meta-core event stream broke; reconnecting");
                            break;
                        }
                    };
                    for event in parser.push(&chunk) {
                        let item = if event.kind == "gap" {
                            if gap_is_harmless {
                                tracing::debug!(
                                    "bootstrap stream starts before the oldest retained entry; replaying from it"
                                );
                                continue;
                            }
                            StreamItem::Gap
                        } else if let Some(id) = event.id {
                            last_id = id.clone();
                            let key = serde_json::from_str::<serde_json::Value>(&event.data)
                                .ok()
                                .and_then(|data| data.get("key")?.as_str().map(str::to_owned));
                            StreamItem::Event { id, key }
                        } else {
                            continue;
                        };
                        if sender.send(item).is_err() {
                            return;
                        }
                    }
                }
                status.set_not_live(Some(
                    "lost the meta-core event stream, reconnecting".to_owned(),
                ));
                status.set_connected(false);
                gap_is_harmless = false;
                None
            }
            Ok(response) => {
                let error = response.status_error();
                tracing::warn!(%error, "meta-core refused the event stream; retrying");
                let retry_after = response.retry_after;
                if let Some(opened) = opened.take() {
                    let _ = opened.send(Err(error));
                }
                retry_after
            }
            Err(error) => {
                tracing::warn!(%error, "cannot open the meta-core event stream; retrying");
                if let Some(opened) = opened.take() {
                    let _ = opened.send(Err(error));
                }
                None
            }
        };
        if sender.is_closed() {
            return;
        }
        // The server's Retry-After wins over our own backoff.
        let wait = retry_after.unwrap_or(delay);
        delay = (delay * 2).min(timings.reconnect_max_delay);
        tokio::time::sleep(wait).await;
    }
}
