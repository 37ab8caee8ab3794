//! Wire-level tools for attacking the proxy: an origin that records every request it receives,
//! CONNECT and TLS through the proxy by hand, hand-built HTTP/2 frames (what a well-behaved
//! client library will not send), gzip bombs, and the figures of a process (RSS, health).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Body bytes received in all.
    pub body_len: u64,
    /// The first 64 KiB of the body.
    pub body: Vec<u8>,
    /// Whether the body was read to its end.
    pub complete: bool,
}

/// A local origin (HTTPS with its own CA, and plain HTTP) that logs every request.
///
/// Routes: `POST /services/oauth2/token?bomb=MIB` answers `400` with a gzip body that
/// decompresses to MIB MiB of zeros; any other token POST Salesforce's refresh failure; any
/// other POST `200 received N`; anything else `200 ok`. Every answer carries
/// `x-received-bytes`.
pub struct Recorder {
    pub addr: SocketAddr,
    pub plain_addr: SocketAddr,
    pub ca_pem: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
    _runtime: std::thread::JoinHandle<()>,
}

/// Names the recorder's certificate covers.
pub const RECORDER_NAMES: &[&str] = &[
    "login.salesforce.com",
    "acme.my.salesforce.com",
    "*.my.salesforce.com",
    "origin.test",
];

impl Recorder {
    pub fn start() -> Self {
        super::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "recording origin CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = dir.path().join("recorder-ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = RECORDER_NAMES.iter().map(|s| s.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        plain.set_nonblocking(true).unwrap();
        let plain_addr = plain.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let plain_log = log.clone();
            rt.spawn(async move {
                let plain = tokio::net::TcpListener::from_std(plain).unwrap();
                loop {
                    let Ok((stream, _)) = plain.accept().await else {
                        continue;
                    };
                    let log = plain_log.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let log = log.clone();
                            async move { Ok::<_, Infallible>(record(req, &log).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let log = log.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let log = log.clone();
                            async move { Ok::<_, Infallible>(record(req, &log).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        Self {
            addr,
            plain_addr,
            ca_pem,
            seen,
            _dir: dir,
            _runtime: runtime,
        }
    }

    /// Every request received so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests whose target contains `needle`.
    pub fn seen_with(&self, needle: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.target.contains(needle))
            .collect()
    }

    /// Proxy arguments that send `hosts` (port 443) and `origin.test` (port 80) here.
    pub fn route_args(&self, hosts: &[&str]) -> Vec<String> {
        let mut args = vec![
            "--upstream-ca".to_owned(),
            self.ca_pem.display().to_string(),
            "--resolve".to_owned(),
            format!("origin.test:80={}", self.plain_addr),
        ];
        for host in hosts {
            args.push("--resolve".into());
            args.push(format!("{host}:443={}", self.addr));
        }
        args
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn record(req: Request<Incoming>, log: &Mutex<Vec<Seen>>) -> Response<Body> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let index = {
        let mut log = log.lock().unwrap();
        log.push(Seen {
            method: method.clone(),
            target: target.clone(),
            body_len: 0,
            body: Vec::new(),
            complete: false,
        });
        log.len() - 1
    };
    let mut body = req.into_body();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            let mut log = log.lock().unwrap();
            let seen = &mut log[index];
            seen.body_len += data.len() as u64;
            let room = (64 * 1024usize).saturating_sub(seen.body.len());
            seen.body.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    let received = {
        let mut log = log.lock().unwrap();
        log[index].complete = complete;
        log[index].body_len
    };
    let full = |data: Bytes| Full::new(data).boxed();
    let builder = Response::builder().header("x-received-bytes", received);
    let bomb = target
        .strip_prefix("/services/oauth2/token?bomb=")
        .and_then(|n| n.parse::<usize>().ok());
    match (method.as_str(), target.as_str()) {
        ("POST", _) if bomb.is_some() => builder
            .status(400)
            .header("content-type", "application/json;charset=UTF-8")
            .header("content-encoding", "gzip")
            .body(full(gzip_bomb_cached(bomb.unwrap())))
            .unwrap(),
        ("POST", t) if t.starts_with("/services/oauth2/token") => builder
            .status(400)
            .header("content-type", "application/json;charset=UTF-8")
            .body(full(Bytes::from_static(
                br#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
            )))
            .unwrap(),
        ("POST", _) => builder
            .body(full(format!("received {received}").into()))
            .unwrap(),
        _ => builder.body(full(Bytes::from_static(b"ok"))).unwrap(),
    }
}

/// A gzip member that decompresses to `mib` MiB of zeros, valid to its CRC and length.
///
/// Built without compressing the whole: a full flush resets the compressor's history, so every
/// flushed MiB of zeros compresses to the same bytes, which are repeated.
pub fn gzip_bomb(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut compress = Compress::new(Compression::best(), false);
    let mut flushed = |input: &[u8], flush: FlushCompress| {
        let mut out = Vec::with_capacity(64 * 1024);
        let before = compress.total_in();
        compress.compress_vec(input, &mut out, flush).unwrap();
        assert_eq!(compress.total_in() - before, input.len() as u64);
        out
    };
    let first = flushed(&zeros, FlushCompress::Full);
    let second = flushed(&zeros, FlushCompress::Full);
    assert_eq!(first, second, "a flushed MiB of zeros compresses the same");
    let last = flushed(&[], FlushCompress::Finish);
    let mut unit = Crc::new();
    unit.update(&zeros);
    let mut crc = Crc::new();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..mib {
        out.extend_from_slice(&first);
        crc.combine(&unit);
    }
    out.extend_from_slice(&last);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    out
}

fn gzip_bomb_cached(mib: usize) -> Bytes {
    static BOMBS: Mutex<Vec<(usize, Bytes)>> = Mutex::new(Vec::new());
    let mut bombs = BOMBS.lock().unwrap();
    if let Some((_, b)) = bombs.iter().find(|(m, _)| *m == mib) {
        return b.clone();
    }
    let bomb = Bytes::from(gzip_bomb(mib));
    bombs.push((mib, bomb.clone()));
    bomb
}

/// A rustls client configuration trusting the PEM file `ca`, offering `alpn`.
pub fn client_tls(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    super::install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TCP connection through which `CONNECT host:443` has been answered `200`.
pub async fn connect_tunnel(proxy: SocketAddr, host: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT {host}: {head}");
    stream
}

/// Reads a response head byte by byte (so nothing after it is consumed).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("the proxy answers CONNECT in time")
            .unwrap();
        assert!(
            n == 1,
            "closed during the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// CONNECT to `host`, then TLS with the proxy's leaf, trusting `ca`, offering `alpn`.
pub async fn tls_through(proxy: SocketAddr, host: &str, ca: &Path, alpn: &[&[u8]]) -> Tls {
    let tcp = connect_tunnel(proxy, host).await;
    let connector = tokio_rustls::TlsConnector::from(client_tls(ca, alpn));
    let name = ServerName::try_from(host.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("the TLS handshake completes in time")
        .expect("the client trusts the proxy's leaf")
}

/// Reads until the peer closes or sends nothing for `idle`.
pub async fn read_until_idle<S: AsyncRead + Unpin>(stream: &mut S, idle: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// HTTP/2 frame types used here.
pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame, serialised.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    assert!(len < 1 << 24);
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The client preface and an empty SETTINGS frame.
pub fn client_preface() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(kind::SETTINGS, 0, 0, &[]));
    out
}

/// A frame as read.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            kind::GOAWAY => 4,
            kind::RST_STREAM => 0,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().unwrap()))
    }
}

/// The next frame, or `None` when the peer closed.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Frame> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
        payload,
    })
}

/// An HPACK string literal without Huffman coding.
pub fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix, the high bits of the first byte set to `flags`.
pub fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// The header block of `GET https://authority/path` (no dynamic table entries).
pub fn hpack_get(authority: &str, path: &str) -> Vec<u8> {
    // :method GET, :scheme https (static 2 and 7).
    let mut out = vec![0x82, 0x87];
    // :path (static name 4) and :authority (static name 1), literal without indexing.
    out.push(0x04);
    hpack_string(&mut out, path.as_bytes());
    out.push(0x01);
    hpack_string(&mut out, authority.as_bytes());
    out
}

/// The `:status` of a response header block, when it is the first field (as servers send it).
pub fn response_status(block: &[u8]) -> Option<u16> {
    let mut at = 0;
    // Dynamic table size updates may come first.
    while block.get(at).is_some_and(|b| b & 0xe0 == 0x20) {
        at += 1;
    }
    let first = *block.get(at)?;
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    let name = if first & 0xc0 == 0x40 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name) {
        return None;
    }
    let len_byte = *block.get(at + 1)?;
    let len = (len_byte & 0x7f) as usize;
    let value = block.get(at + 2..at + 2 + len)?;
    let digits = if len_byte & 0x80 != 0 {
        huffman_digits(value)
    } else {
        String::from_utf8(value.to_vec()).ok()?
    };
    digits.parse().ok()
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B: `0`-`2` are 5-bit
/// codes 0-2, `3`-`9` 6-bit codes 0x19-0x1f).
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut at = 0;
    while at + 5 <= bits.len() {
        let v = bits[at..at + 5].iter().fold(0u8, |a, b| a << 1 | b);
        if v <= 2 {
            out.push((b'0' + v) as char);
            at += 5;
        } else if (0x0c..=0x0f).contains(&v) && at + 6 <= bits.len() {
            let code = v << 1 | bits[at + 5];
            if code < 0x19 {
                break;
            }
            out.push((b'3' + code - 0x19) as char);
            at += 6;
        } else {
            break;
        }
    }
    out
}

/// Writes `bytes`, giving up (false) when the peer stops reading or closes.
pub async fn write_or_stall<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    stall: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(stall, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}

/// The resident set size of a process now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// The resident set size's high-water mark, in KiB.
pub fn peak_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc status"))
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `GET path` on the admin port; the status and body, or `None` when it does not answer
/// within five seconds.
pub fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Some((status, body))
}

/// Whether `/healthz` on the admin port answers `200`.
pub fn healthy(admin: SocketAddr) -> bool {
    matches!(admin_get(admin, "/healthz"), Some((200, _)))
}
