//! `/events/stream`: every kept event as a server-sent event, as it happens.
//!
//! The token path only ever does a non-blocking broadcast send; each reader has its own task
//! that copies from the broadcast into a small channel the response body drains. A reader too
//! slow to keep up fills its channel, its task stops draining the broadcast, and the broadcast
//! drops the oldest lines for it alone: the reader is told how many with an SSE comment.
//!
//! Must never: block or slow the sender, or send anything but the kept JSON lines.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use tokio::sync::{broadcast, mpsc};

use crate::body::{BodyError, ProxyBody};

/// Proxies and load balancers close connections idle for a minute or so; a comment every
/// 15 s keeps the stream open and lets the reader notice a dead server.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Frames waiting for a slow reader before its share of the broadcast starts to lag.
const QUEUED_FRAMES: usize = 64;
/// Frames gathered into one chunk at most (a little over: the last one is not cut).
const COALESCE_BYTES: usize = 32 * 1024;

/// The streaming response.
pub fn response() -> Response<ProxyBody> {
    use http_body_util::BodyExt;
    let (tx, rx) = mpsc::channel(QUEUED_FRAMES);
    let events = crate::telemetry::subscribe();
    tokio::spawn(copy(events, tx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Frames { rx }.boxed())
        .expect("valid response")
}

/// One kept line as an SSE message: `id:` when the event has an id, then one `data:` line
/// (JSON lines hold no newline, so one is enough).
pub fn frame(line: &str) -> String {
    let id = event_id_of(line).filter(|id| !id.is_empty() && !id.contains(['\r', '\n', '\\']));
    let mut out = String::with_capacity(line.len() + 40);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(line);
    out.push_str("\n\n");
    out
}

/// The `event_id` of a kept line without parsing it: every reader frames every event, so
/// the price is a substring search. Inside a JSON string a quote is escaped, so the unescaped
/// `"event_id":"` can only be the member's name.
fn event_id_of(line: &str) -> Option<&str> {
    let start = line.find("\"event_id\":\"")? + 12;
    let rest = &line[start..];
    rest.find('"').map(|end| &rest[..end])
}

async fn copy(mut events: broadcast::Receiver<std::sync::Arc<str>>, tx: mpsc::Sender<Bytes>) {
    // Sent at once so a reader knows the stream is open (and `curl -N` shows something).
    if tx
        .send(Bytes::from_static(b"retry: 3000\n: connected\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        let mut frames = tokio::select! {
            received = events.recv() => match message(received) {
                Some(frame) => frame,
                None => return,
            },
            _ = heartbeat.tick() => ": heartbeat\n\n".to_owned(),
            () = tx.closed() => return,
        };
        // Under load events come in bursts: what has arrived meanwhile goes out in the same
        // chunk (one write, one wake-up of the connection) rather than one chunk each.
        while frames.len() < COALESCE_BYTES {
            match events.try_recv() {
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => break,
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    frames.push_str(&lagged(missed));
                }
                Ok(line) => frames.push_str(&frame(&line)),
            }
        }
        if tx.send(Bytes::from(frames)).await.is_err() {
            return;
        }
    }
}

/// One received event as its frame; `None` once the feed is closed.
fn message(received: Result<std::sync::Arc<str>, broadcast::error::RecvError>) -> Option<String> {
    match received {
        Ok(line) => Some(frame(&line)),
        Err(broadcast::error::RecvError::Lagged(missed)) => Some(lagged(missed)),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

fn lagged(missed: u64) -> String {
    format!(": lagged, {missed} events missed\n\n")
}

/// The response body: frames from the reader's channel, until the server side ends.
struct Frames {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        self.rx
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_the_event_id_and_one_data_line() {
        let line = r#"{"ts":"2026-12-01T10:00:00.000Z","event":"invalid_grant","event_id":"ev_1"}"#;
        assert_eq!(frame(line), format!("id: ev_1\ndata: {line}\n\n"));
        let line = r#"{"event":"not_inspected"}"#;
        assert_eq!(frame(line), format!("data: {line}\n\n"));
    }

    #[test]
    fn an_event_id_quoted_inside_another_member_is_not_taken_for_the_id() {
        let line = r#"{"event":"warning","message":"saw \"event_id\":\"forged\" in a body","event_id":"ev_2"}"#;
        assert_eq!(frame(line), format!("id: ev_2\ndata: {line}\n\n"));
        let line = r#"{"event":"warning","message":"no id: \"event_id\":\"forged\""}"#;
        assert_eq!(frame(line), format!("data: {line}\n\n"));
    }
}
