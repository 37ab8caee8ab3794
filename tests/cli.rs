//! The command line: `explain`, `ca`, `logs`, `completions`, `man`, `--version`, host names
//! for listen addresses, `NO_COLOR`, and how start-up errors read.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn grantdoctor(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_reads_a_pasted_body_from_stdin() {
    let (ok, out, err) = grantdoctor(
        &["explain", "--grant-type", "client_credentials"],
        Some(
            r#"{"error":"invalid_grant","error_description":"request not supported on this domain"}"#,
        ),
    );
    assert!(ok, "{err}");
    assert!(out.contains("1. sf.cc.wrong_domain"), "{out}");
    assert!(
        out.contains("fix: Call https://<MyDomain>.my.salesforce.com/services/oauth2/token"),
        "{out}"
    );
}

#[test]
fn explain_decodes_an_assertion_and_prints_json() {
    use base64::Engine;
    let enc = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let assertion = format!(
        "{}.{}.c2ln",
        enc(serde_json::json!({"alg":"HS256"})),
        enc(
            serde_json::json!({"iss":"3MVG9x","sub":"a@b.c","aud":"https://login.salesforce.com","exp":1})
        )
    );
    let (ok, out, err) = grantdoctor(
        &[
            "explain",
            "--json",
            "--grant-type",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "--assertion",
            &assertion,
            "invalid_grant: invalid assertion",
        ],
        None,
    );
    assert!(ok, "{err}");
    let causes: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(causes[0]["id"], "sf.jwt.invalid_signature");
    assert!(
        causes[0]["evidence"][0]
            .as_str()
            .unwrap()
            .contains("alg is HS256")
    );
    assert!(!out.contains(&assertion));
}

#[test]
fn explain_without_input_says_what_it_needs() {
    let (ok, _, err) = grantdoctor(&["explain"], Some(""));
    assert!(!ok);
    assert!(err.contains("nothing to explain"), "{err}");
}

#[test]
fn ca_init_and_show_report_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("certs");
    let ca = ca_dir.to_str().unwrap();
    let (ok, out, err) = grantdoctor(&["ca", "init", "--ca-dir", ca], None);
    assert!(ok, "{err}");
    assert!(out.starts_with("created"), "{out}");
    let (ok, out, _) = grantdoctor(&["ca", "show", "--ca-dir", ca], None);
    assert!(ok);
    assert!(
        out.contains("sha256:") && out.contains("grantdoctor local CA"),
        "{out}"
    );
    let (_, again, _) = grantdoctor(&["ca", "init", "--ca-dir", ca], None);
    assert!(again.starts_with("exists:"), "{again}");
}

#[test]
fn the_demo_shows_four_diagnosed_failures_and_exits() {
    let (ok, out, err) = grantdoctor(&["demo"], None);
    assert!(ok, "{err}");
    for cause in [
        "sf.refresh.approval_limit_evicted",
        "sf.cc.wrong_domain",
        "sf.password.bad_credentials",
        "sf.request.malformed",
    ] {
        assert!(
            out.contains(&format!("grantdoctor-cause: {cause}")),
            "{cause} missing from:\n{out}"
        );
    }
    assert!(!out.contains("demo-secret") && !out.contains("DEMOTOKEN"));
}

#[test]
fn logs_renders_a_json_log_for_a_human() {
    let line = r#"{"ts":"2026-11-25T20:14:03.120Z","level":"warn","event":"invalid_grant","host":"login.salesforce.com","grant_type":"refresh_token","status":400,"error":"invalid_grant","error_description":"expired access/refresh token","cause":"sf.refresh.revoked"}"#;
    let (ok, out, _) = grantdoctor(&["logs"], Some(&format!("{line}\nnot json\n")));
    assert!(ok);
    assert!(
        out.contains("20:14:03 WARN  invalid_grant login.salesforce.com refresh_token 400"),
        "{out}"
    );
    assert!(
        out.contains("→ sf.refresh.revoked") && out.ends_with("not json\n"),
        "{out}"
    );
}

#[test]
fn ca_trust_prints_what_each_runtime_needs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("certs");
    let (ok, out, err) = grantdoctor(
        &[
            "ca",
            "trust",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--listen",
            "127.0.0.1:8181",
        ],
        None,
    );
    assert!(ok, "{err}");
    let bundle = std::fs::canonicalize(ca.join("bundle.pem")).unwrap();
    assert!(
        out.contains(&format!("export REQUESTS_CA_BUNDLE={}", bundle.display())),
        "{out}"
    );
    assert!(out.contains("export HTTPS_PROXY=http://127.0.0.1:8181"));
    for needle in [
        "NODE_EXTRA_CA_CERTS=",
        "NODE_USE_ENV_PROXY=1",
        "EnvHttpProxyAgent",
        "HttpsProxyAgent",
        "https-proxy-agent",
        "axios",
        "keytool -importcert -cacerts -noprompt",
        "-Djdk.http.auth.tunneling.disabledSchemes=",
        "-Dhttps.proxyPort=8181",
        "update-ca-certificates",
        "add-trusted-cert",
        "SSL_CERT_FILE=",
    ] {
        assert!(out.contains(needle), "{needle} missing");
    }
    // Node 20 and 22 ignore the variable: every line that sets it says which Node reads it.
    for line in out.lines().filter(|l| l.contains("NODE_USE_ENV_PROXY")) {
        assert!(
            line.contains(">= 24"),
            "NODE_USE_ENV_PROXY without its Node version: {line}"
        );
    }
    assert!(!out.contains("JAVA_HOME"), "{out}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef grantdoctor"),
        ("fish", "complete -c grantdoctor"),
    ] {
        let (ok, out, err) = grantdoctor(&["completions", shell], None);
        assert!(ok, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("check-config") && out.contains("data-dir"),
            "{shell}"
        );
    }
    let (ok, _, err) = grantdoctor(&["completions", "tcsh"], None);
    assert!(!ok && err.contains("tcsh"), "{err}");
}

#[test]
fn man_prints_a_roff_manual_page() {
    let (ok, out, err) = grantdoctor(&["man"], None);
    assert!(ok, "{err}");
    assert!(out.contains(".TH grantdoctor 1"), "{out}");
    // roff escapes the hyphens of flags.
    assert!(out.contains("approval\\-limit"), "{out}");
    assert!(out.contains("invalid_grant"));
}

#[test]
fn the_version_names_the_commit() {
    let (ok, out, err) = grantdoctor(&["--version"], None);
    assert!(ok, "{err}");
    let commit = grantdoctor::build_info::GIT_COMMIT;
    assert_eq!(
        out.trim(),
        format!(
            "grantdoctor {} (commit {commit})",
            env!("CARGO_PKG_VERSION")
        )
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        // The test binary and grantdoctor were built from this checkout's HEAD, unless a commit
        // landed after the build; then the hash is still a 12-digit hex one.
        Ok(head) if head.status.success() => {
            assert_eq!(commit.len(), 12, "{commit}");
            assert!(commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");
        }
        _ => assert!(!commit.is_empty()),
    }
}

/// Runs `command` on a pseudo-terminal (`script`), so the program sees a terminal on stdout.
fn on_a_terminal(command: &str, no_color: bool) -> String {
    let mut script = Command::new("script");
    script
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::null());
    if no_color {
        script.env("NO_COLOR", "1");
    } else {
        script.env_remove("NO_COLOR");
    }
    let out = script.output().expect("script (util-linux) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn no_color_turns_colour_off_in_logs_and_the_pretty_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.json");
    std::fs::write(
        &log,
        r#"{"ts":"2026-11-25T20:14:03.120Z","level":"warn","event":"invalid_grant","cause":"sf.refresh.revoked"}"#,
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_grantdoctor");
    let logs = format!("{bin} logs {}", log.display());
    let coloured = on_a_terminal(&logs, false);
    assert!(
        coloured.contains("invalid_grant") && coloured.contains('\x1b'),
        "{coloured:?}"
    );
    let plain = on_a_terminal(&logs, true);
    assert!(
        plain.contains("invalid_grant") && !plain.contains('\x1b'),
        "{plain:?}"
    );

    let run = format!(
        "timeout -s TERM 3 {bin} run --log-format pretty --listen 127.0.0.1:0 --admin 127.0.0.1:0 --ca-dir {0}/certs --data-dir {0}/data",
        dir.path().display()
    );
    let coloured = on_a_terminal(&run, false);
    assert!(
        coloured.contains("listening") && coloured.contains('\x1b'),
        "{coloured:?}"
    );
    let plain = on_a_terminal(&run, true);
    assert!(
        plain.contains("listening") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}

#[test]
fn listen_addresses_take_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("certs");
    let (ok, out, err) = grantdoctor(
        &[
            "ca",
            "trust",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--listen",
            "localhost:8181",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("export HTTPS_PROXY=http://127.0.0.1:8181"),
        "{out}"
    );

    let proxy = common::Spawned::start(&[
        "run".into(),
        "--listen".into(),
        "localhost:0".into(),
        "--admin".into(),
        "localhost:0".into(),
        "--ca-dir".into(),
        ca.display().to_string(),
        "--data-dir".into(),
        dir.path().join("data").display().to_string(),
        "--log-format".into(),
        "json".into(),
    ]);
    assert!(proxy.addr.ip().is_loopback() && proxy.addr.port() != 0);
    assert!(proxy.admin.unwrap().ip().is_loopback());

    let emulator = common::Spawned::start(&[
        "emulate".into(),
        "--plain".into(),
        "--listen".into(),
        "localhost:0".into(),
        "--log-format".into(),
        "json".into(),
    ]);
    assert!(emulator.addr.ip().is_loopback() && emulator.addr.port() != 0);
}

#[test]
fn a_listen_name_that_does_not_resolve_is_a_usage_error() {
    for args in [
        vec!["check-config", "--listen", "no-such-host.invalid:8080"],
        vec!["check-config", "--admin", "no-such-host.invalid:9090"],
        vec!["emulate", "--listen", "no-such-host.invalid:8443"],
        vec!["ca", "trust", "--listen", "no-such-host.invalid:8080"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("no-such-host.invalid") && err.contains("does not resolve"),
            "{err}"
        );
    }
}

/// Runs the binary as uid/gid 10001 with no groups when the tests run as root (root reads a
/// mode-0000 file), else as the current user. The binary is copied where 10001 can run it.
fn as_unprivileged(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("grantdoctor");
    std::fs::copy(env!("CARGO_BIN_EXE_grantdoctor"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    if rustix::process::getuid().is_root() {
        Command::new("setpriv")
            .args(["--reuid", "10001", "--regid", "10001", "--clear-groups"])
            .arg(&bin)
            .args(args)
            .output()
            .expect("setpriv runs")
    } else {
        Command::new(&bin).args(args).output().unwrap()
    }
}

#[test]
fn an_unreadable_ca_is_reported_once_with_the_os_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let certs = dir.path().join("certs");
    let data = dir.path().join("data");
    let (ok, _, err) = grantdoctor(&["ca", "init", "--ca-dir", certs.to_str().unwrap()], None);
    assert!(ok, "{err}");
    for path in [&certs, &data] {
        std::fs::create_dir_all(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(certs.join("ca.pem"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = as_unprivileged(
        dir.path(),
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--ca-dir",
            certs.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let ca_pem = certs.join("ca.pem");
    assert!(
        err.contains(&format!(
            "grantdoctor: loading the CA: {}: Permission denied (os error 13)\n",
            ca_pem.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("Permission denied").count(), 1, "{err}");
}

#[test]
fn every_run_variable_is_grantdoctor_and_the_flag() {
    use clap::CommandFactory;
    let command = grantdoctor::cli::Cli::command();
    let run = command.find_subcommand("run").unwrap();
    let mut checked = 0;
    for arg in run.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        let long = arg.get_long().unwrap_or_else(|| panic!("{id} has no flag"));
        let expected = format!(
            "GRANTDOCTOR_{}",
            long.to_ascii_uppercase().replace('-', "_")
        );
        let env = arg.get_env().map(|v| v.to_string_lossy().into_owned());
        assert_eq!(env.as_deref(), Some(expected.as_str()), "--{long}");
        checked += 1;
    }
    assert!(checked > 40, "only {checked} arguments");
    // The old names kept as fallbacks are other names, of real arguments.
    for (id, old) in grantdoctor::cli::ENV_FALLBACKS {
        let arg = run.get_arguments().find(|a| a.get_id() == id).unwrap();
        assert_ne!(arg.get_env().unwrap().to_str(), Some(old), "{id}");
    }
}
