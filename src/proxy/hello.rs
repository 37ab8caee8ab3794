//! Peeking at the first bytes of a tunnel to learn the TLS server name (SNI) before deciding
//! whether to intercept. rustls parses the ClientHello; we keep every byte read so the
//! connection can be replayed to whoever handles it next.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A ClientHello larger than this is not worth waiting for (real ones are under 2 KiB,
/// post-quantum key shares included).
const MAX_HELLO: usize = 64 * 1024;

/// What the first bytes of a tunnel turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A TLS ClientHello, with the server name when the client sent one.
    Tls { sni: Option<String> },
    /// Something else: another protocol, or a TLS record rustls could not parse.
    NotTls { reason: &'static str },
    /// The client sent nothing within the wait (a server-speaks-first protocol, or a stall).
    Silent,
    /// The client closed the tunnel before sending anything.
    Closed,
}

/// Reads until the opening is known; returns the bytes read alongside.
pub async fn peek_opening<IO: AsyncRead + Unpin>(
    io: &mut IO,
    wait: Duration,
) -> std::io::Result<(Bytes, Opening)> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        let opening = match read {
            Err(_) if buf.is_empty() => Some(Opening::Silent),
            Err(_) => Some(Opening::NotTls {
                reason: "incomplete TLS ClientHello before the timeout",
            }),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => Some(Opening::Closed),
            Ok(Ok(_)) if buf[0] != 0x16 => Some(Opening::NotTls {
                reason: "the client did not start a TLS handshake",
            }),
            Ok(Ok(_)) => {
                let mut fresh = &buf[fed..];
                while !fresh.is_empty() {
                    if acceptor.read_tls(&mut fresh).is_err() {
                        break;
                    }
                }
                fed = buf.len();
                match acceptor.accept() {
                    Ok(Some(accepted)) => Some(Opening::Tls {
                        sni: accepted.client_hello().server_name().map(str::to_owned),
                    }),
                    Ok(None) if buf.len() < MAX_HELLO => None,
                    Ok(None) => Some(Opening::NotTls {
                        reason: "TLS ClientHello larger than 64 KiB",
                    }),
                    Err(_) => Some(Opening::NotTls {
                        reason: "malformed TLS ClientHello",
                    }),
                }
            }
        };
        if let Some(opening) = opening {
            return Ok((buf.freeze(), opening));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn opening_of(bytes: Vec<u8>) -> Opening {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&bytes).await.unwrap();
            // Keep the pipe open so the peek is decided by content, not by EOF.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        peek_opening(&mut server, Duration::from_millis(300))
            .await
            .unwrap()
            .1
    }

    fn client_hello(sni: &str) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn a_client_hello_yields_its_server_name() {
        let opening = opening_of(client_hello("login.salesforce.com")).await;
        assert_eq!(
            opening,
            Opening::Tls {
                sni: Some("login.salesforce.com".into())
            }
        );
    }

    #[tokio::test]
    async fn a_client_hello_split_across_writes_is_reassembled() {
        let hello = client_hello("acme.my.salesforce.com");
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in hello.chunks(7) {
                client.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let (bytes, opening) = peek_opening(&mut server, Duration::from_secs(3))
            .await
            .unwrap();
        assert!(
            matches!(opening, Opening::Tls { sni: Some(ref s) } if s == "acme.my.salesforce.com")
        );
        assert!(bytes.len() > 100);
    }

    #[tokio::test]
    async fn plain_text_and_garbage_are_not_tls() {
        assert!(matches!(
            opening_of(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await,
            Opening::NotTls { .. }
        ));
        let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x05];
        garbage.extend_from_slice(&[0xff; 5]);
        assert!(matches!(opening_of(garbage).await, Opening::NotTls { .. }));
    }

    #[tokio::test]
    async fn silence_and_closing_are_told_apart() {
        assert_eq!(opening_of(Vec::new()).await, Opening::Silent);
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let (_, opening) = peek_opening(&mut server, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(opening, Opening::Closed);
    }
}
