//! A lingering close for connections we end while the client is still sending.
//!
//! When a socket is closed with unread bytes in its receive queue the kernel answers with a
//! reset, and a reset makes the peer's kernel discard what it had received but the client had
//! not read yet: a `431` for an oversized head, written while the client was still writing
//! that head, would arrive and be thrown away. So a connection that ended in an error closes
//! its write side first, then reads and discards what the client still sends, for a short
//! bounded while, before the socket is dropped. It never holds a connection open for a client
//! that keeps sending: the bounds are small, and only erroring connections linger.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long a closing connection keeps reading what the client still sends.
const LINGER_FOR: Duration = Duration::from_secs(1);
/// How much of it we read before giving up and dropping anyway.
const LINGER_BYTES: usize = 256 * 1024;

/// A stream that, once armed, closes gracefully in the background when dropped.
pub struct Linger<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<T>,
    armed: Arc<AtomicBool>,
}

/// Arms a [`Linger`] after the stream has been handed to the code that owns it until it ends.
#[derive(Clone)]
pub struct Arm(Arc<AtomicBool>);

impl Arm {
    /// The connection ended in an error: the client may still be sending.
    pub fn arm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger<T> {
    pub fn new(inner: T) -> (Self, Arm) {
        let armed = Arc::new(AtomicBool::new(false));
        let arm = Arm(armed.clone());
        (
            Self {
                inner: Some(inner),
                armed,
            },
            arm,
        )
    }

    fn io(&mut self) -> io::Result<&mut T> {
        // Only `drop` takes the stream out, so a live `Linger` always holds it.
        self.inner
            .as_mut()
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Linger<T> {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let (Some(io), Ok(runtime)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(close_gracefully(io));
    }
}

/// Sends our FIN, then reads and discards what the peer still sends, within the bounds.
pub(super) async fn close_gracefully<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let drain = async {
        // Flushes what is still buffered (a TLS alert, the error response) and sends our FIN.
        let _ = io.shutdown().await;
        let mut scratch = vec![0u8; 16 * 1024];
        let mut read = 0;
        while read < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_FOR, drain).await;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Linger<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Linger;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_armed_stream_reads_on_after_drop_until_the_peer_closes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (linger, arm) = Linger::new(ours);
        arm.arm();
        drop(linger);
        // The peer can still write (the lingering side reads it) and then sees our close.
        theirs.write_all(&[7u8; 4096]).await.unwrap();
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn an_unarmed_stream_closes_at_once() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (linger, _arm) = Linger::new(ours);
        drop(linger);
        // Nobody reads any more: a write larger than the pipe's buffer fails instead of hanging.
        assert!(theirs.write_all(&[7u8; 4096]).await.is_err());
    }
}
