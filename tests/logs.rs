//! `grantdoctor logs` on a log written by a real proxy run: dates and event ids shown,
//! `--cause`, `--client-id` and `--since` filters, `--follow` from the end or from the
//! start, and the proxy's own console format being the same rendering.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::stack::Stack;

fn grantdoctor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
}

/// `grantdoctor logs ARGS`: exit code, stdout, stderr.
fn logs(args: &[&str]) -> (i32, String, String) {
    let out = grantdoctor()
        .arg("logs")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A proxy run's log: one diagnosed failure and one success of the same client; the
/// failure's event id and top cause.
async fn real_log(dir: &Path) -> (std::path::PathBuf, String, String) {
    let stack = Stack::start(&[]);
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "3MVG9cc"),
        ("client_secret", "cc-secret"),
    ];
    let failed = stack.token("login.salesforce.com", &form).await;
    assert_eq!(failed.status, 400);
    assert_eq!(
        stack.token("acme.my.salesforce.com", &form).await.status,
        200
    );
    let event_id = failed.headers["grantdoctor-event"]
        .to_str()
        .unwrap()
        .to_owned();
    let cause = failed.cause().to_owned();
    assert!(!cause.is_empty(), "{:?}", failed.headers);
    stack.proxy.wait_for_event(|e| e["event"] == "token_issued");
    let path = dir.join("grantdoctor.log");
    std::fs::write(&path, stack.proxy.raw_log()).unwrap();
    (path, event_id, cause)
}

#[tokio::test]
async fn a_real_log_is_shown_with_dates_and_event_ids_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let (path, event_id, cause) = real_log(dir.path()).await;
    let file = path.to_str().unwrap();
    let today = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    let today = &today[..10];

    let (code, all, err) = logs(&[file]);
    assert_eq!(code, 0, "{err}");
    let failure = all
        .lines()
        .find(|l| l.contains(&event_id))
        .unwrap_or_else(|| panic!("{event_id} not shown:\n{all}"));
    assert!(failure.starts_with(today), "{failure}");
    assert!(all.contains(&format!("→ {cause}")), "{all}");
    assert!(all.contains(" token_issued "), "{all}");
    assert!(all.contains(" listening "), "{all}");
    assert!(!all.contains("cc-secret"), "{all}");

    let (code, by_cause, _) = logs(&[file, "--cause", &cause]);
    assert_eq!(code, 0);
    assert!(by_cause.contains(&event_id), "{by_cause}");
    assert!(!by_cause.contains("token_issued") && !by_cause.contains("listening"));

    let (_, none, _) = logs(&[file, "--cause", "sf.no.such.cause"]);
    assert_eq!(none, "");

    let (_, by_client, _) = logs(&[file, "--client-id", "3MVG9cc"]);
    assert!(by_client.contains(&event_id) && by_client.contains("token_issued"));
    assert!(!by_client.contains("listening"), "{by_client}");
    let (_, other_client, _) = logs(&[file, "--client-id", "3MVG9other"]);
    assert_eq!(other_client, "");

    let (_, recent, _) = logs(&[file, "--since", "10m"]);
    assert!(recent.contains(&event_id), "{recent}");
    let (_, since_then, _) = logs(&[file, "--since", "2000-01-01T00:00:00Z"]);
    assert!(since_then.contains(&event_id));
    let (_, future, _) = logs(&[file, "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(future, "");

    let (_, both, _) = logs(&[file, "--cause", &cause, "--client-id", "3MVG9cc"]);
    assert_eq!(both.matches(&event_id).count(), 1, "{both}");
}

#[test]
fn a_bad_since_is_a_usage_error_naming_the_flag() {
    for bad in ["yesterday", "10", "2026-13-01T00:00:00Z"] {
        let (code, out, err) = logs(&["--since", bad]);
        assert_eq!(code, 2, "{bad}: {out}{err}");
        assert!(err.contains("--since"), "{bad}: {err}");
        assert!(
            err.contains("10m"),
            "the error shows what is expected: {err}"
        );
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let (code, _, err) = logs(&["/nonexistent/grantdoctor.log"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/grantdoctor.log"), "{err}");
}

const OLD: &str = r#"{"ts":"2026-11-25T20:14:03.120Z","level":"info","event":"token_issued","event_id":"ev_0000000000000old","host":"login.salesforce.com","status":200}"#;
const NEW: &str = r#"{"ts":"2026-11-25T20:15:03.120Z","level":"warn","event":"invalid_grant","event_id":"ev_0000000000000new","host":"login.salesforce.com","status":400,"error":"invalid_grant","error_description":"expired access/refresh token","cause":"sf.refresh.revoked"}"#;

/// `logs --follow` on a file, its rendered lines arriving on the channel.
struct Following {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Following {
    fn start(path: &Path, extra: &[&str]) -> Self {
        let mut child = grantdoctor()
            .arg("logs")
            .arg("--follow")
            .args(extra)
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line within 10 s")
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(file, "{line}").unwrap();
}

#[test]
fn follow_starts_at_the_end_and_prints_what_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    std::fs::write(&path, format!("{OLD}\n")).unwrap();
    let follow = Following::start(&path, &[]);
    // Until it is reading, an appended line could be taken for one that was already there.
    std::thread::sleep(Duration::from_millis(700));
    append(&path, NEW);
    let first = follow.next();
    assert!(
        first.starts_with("2026-11-25 20:15:03 WARN  invalid_grant ev_0000000000000new"),
        "{first}"
    );
    assert_eq!(follow.next(), "    → sf.refresh.revoked");
}

#[test]
fn follow_from_start_replays_then_follows_and_survives_a_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    std::fs::write(&path, format!("{OLD}\n")).unwrap();
    let follow = Following::start(&path, &["--from-start", "--cause", "sf.refresh.revoked"]);
    append(&path, NEW);
    // The filter holds while following: the old success is not shown.
    assert!(follow.next().contains("ev_0000000000000new"));
    assert_eq!(follow.next(), "    → sf.refresh.revoked");
    // Rotated in place (copytruncate): read again from the start.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&path, "").unwrap();
    std::thread::sleep(Duration::from_millis(700));
    append(&path, &NEW.replace("new", "two"));
    assert!(follow.next().contains("ev_0000000000000two"));
}

/// Digits vary between runs (times, ports); the shape must not.
fn shape(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `listening` line of a proxy started with `--log-format format`, as it wrote it.
fn listening_line(dir: &Path, format: &str) -> String {
    let mut child = grantdoctor()
        .args(["run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--ca-dir")
        .arg(dir.join("certs"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--log-format", format])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(line);
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("the proxy logs that it listens")
}

#[test]
fn the_proxy_console_format_is_the_logs_rendering() {
    let dir = tempfile::tempdir().unwrap();
    let json = listening_line(dir.path(), "json");
    let pretty = listening_line(dir.path(), "pretty");
    let mut render = grantdoctor()
        .arg("logs")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(render.stdin.take().unwrap(), "{json}").unwrap();
    let rendered = String::from_utf8(render.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(
        shape(&pretty),
        shape(rendered.trim_end()),
        "{pretty}\n{rendered}"
    );
    assert!(
        pretty.contains(" INFO  listening addr=127.0.0.1:"),
        "{pretty}"
    );
    assert!(
        !pretty.contains('\x1b'),
        "no colour when not a terminal: {pretty}"
    );
}
