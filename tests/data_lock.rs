//! One process per data directory: a second `run` on the same `--data-dir` refuses at start,
//! naming the holder's pid and the lock file, and a holder that crashed leaves no stale lock.

mod common;

use std::time::{Duration, Instant};

use common::{ProxyProcess, Spawned};

fn run_args(dir: &std::path::Path, data: &std::path::Path) -> Vec<String> {
    [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--ca-dir",
        dir.join("certs-2").to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn a_second_process_on_the_same_data_directory_refuses_naming_the_holder() {
    let holder = ProxyProcess::start(&[]);
    let data = holder.dir.path().join("data");
    let lock = data.join("grantdoctor.lock");
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        holder.pid().to_string()
    );

    let started = Instant::now();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(run_args(holder.dir.path(), &data))
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it waited for the lock"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "data directory {} is in use by grantdoctor pid {} (lock {}): stop it or use another --data-dir",
            data.display(),
            holder.pid(),
            lock.display()
        )),
        "{err}"
    );
    // The refused process touched nothing: the holder still runs on its listener.
    assert!(std::net::TcpStream::connect(holder.addr).is_ok());
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        holder.pid().to_string()
    );
}

#[test]
fn a_killed_holder_leaves_no_stale_lock() {
    let mut holder = ProxyProcess::start(&[]);
    let data = holder.dir.path().join("data");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &holder.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Reap it, so the kernel has closed its descriptors (and released the lock).
    let _ = holder.process.terminate();
    assert!(data.join("grantdoctor.lock").exists());
    let next = Spawned::start(&run_args(holder.dir.path(), &data));
    assert_eq!(
        std::fs::read_to_string(data.join("grantdoctor.lock"))
            .unwrap()
            .trim(),
        next.pid().to_string()
    );
}
