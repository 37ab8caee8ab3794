//! What the end-to-end benchmarks share: a free loopback port, waiting for a listener, a child
//! process that is killed when dropped.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process that does not outlive its benchmark.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address whose port was free a moment ago.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Blocks until something accepts connections on `addr` (30 s at most).
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}
