//! Blind tunnels: bytes copied both ways, never decrypted, never parsed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Large buffers: fewer system calls per megabyte, which matters when the copy competes with
/// client and origin for two cores.
const COPY_BUFFER: usize = 64 * 1024;

/// Copies until either side closes, or until no byte has moved either way for `idle`;
/// `prefix` (bytes already read while peeking) goes first.
pub async fn run<IO>(
    client: IO,
    prefix: Bytes,
    mut origin: TcpStream,
    target: &str,
    idle: Duration,
    metrics: &crate::metrics::Metrics,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    if !prefix.is_empty()
        && let Err(e) = origin.write_all(&prefix).await
    {
        tracing::debug!(event = "tunnel", host = target, outcome = "origin_write_failed", reason = %e);
        return;
    }
    let activity = Activity::default();
    let mut client = Watched {
        inner: client,
        activity: activity.clone(),
    };
    let mut origin = Watched {
        inner: origin,
        activity: activity.clone(),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut origin,
        COPY_BUFFER,
        COPY_BUFFER,
    );
    tokio::select! {
        copied = copy => match copied {
            Ok((up, down)) => {
                let up = up + prefix.len() as u64;
                crate::metrics::Metrics::add(&metrics.tunnel_bytes, &[("direction", "up")], up);
                crate::metrics::Metrics::add(&metrics.tunnel_bytes, &[("direction", "down")], down);
                tracing::debug!(event = "tunnel", host = target, bytes_up = up, bytes_down = down)
            }
            Err(e) => tracing::debug!(event = "tunnel", host = target, outcome = "reset", reason = %e),
        },
        () = activity.idle_for(idle) => {
            crate::metrics::Metrics::count(&metrics.limits, &[("limit", "idle_timeout")]);
            tracing::info!(event = "tunnel", host = target, outcome = "idle_timeout", idle_s = idle.as_secs());
        }
    }
}

/// When bytes last moved through a tunnel, in milliseconds since it opened.
#[derive(Clone)]
struct Activity {
    opened: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: Arc::default(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.opened.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// A stream that notes each read or write that moved bytes.
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
