//! Blind tunnels: bytes copied both ways, never decrypted, never parsed.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Large buffers: fewer system calls per megabyte, which matters when the copy competes with
/// client and origin for two cores.
const COPY_BUFFER: usize = 64 * 1024;

/// Copies until either side closes; `prefix` (bytes already read while peeking) goes first.
pub async fn run<IO>(
    mut client: IO,
    prefix: Bytes,
    mut origin: TcpStream,
    target: &str,
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
    match tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut origin,
        COPY_BUFFER,
        COPY_BUFFER,
    )
    .await
    {
        Ok((up, down)) => {
            let up = up + prefix.len() as u64;
            crate::metrics::Metrics::add(&metrics.tunnel_bytes, &[("direction", "up")], up);
            crate::metrics::Metrics::add(&metrics.tunnel_bytes, &[("direction", "down")], down);
            tracing::debug!(
                event = "tunnel",
                host = target,
                bytes_up = up,
                bytes_down = down
            )
        }
        Err(e) => tracing::debug!(event = "tunnel", host = target, outcome = "reset", reason = %e),
    }
}
