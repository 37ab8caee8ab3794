//! Configuration sources: flags over environment over the file over defaults, and clear errors.

use std::process::Command;

fn check_config(args: &[&str], env: &[(&str, &str)], file: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantdoctor.toml");
    std::fs::write(&path, file).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_grantdoctor"));
    command
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_file_fills_in_and_env_and_flags_override_it() {
    let file = "max_connections = 5\ndrain_timeout = 3\nretention_days = 30\n";
    let (code, out, err) = check_config(&[], &[], file);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("max_connections = 5") && out.contains("drain_timeout = 3"),
        "{out}"
    );
    let (_, out, _) = check_config(&[], &[("GRANTDOCTOR_MAX_CONNECTIONS", "7")], file);
    assert!(
        out.contains("max_connections = 7") && out.contains("drain_timeout = 3"),
        "{out}"
    );
    let (_, out, _) = check_config(
        &["--max-connections", "9"],
        &[("GRANTDOCTOR_MAX_CONNECTIONS", "7")],
        file,
    );
    assert!(
        out.contains("max_connections = 9") && out.contains("retention_days = 30"),
        "{out}"
    );
}

#[test]
fn secrets_are_masked_in_the_effective_config() {
    let (code, out, err) = check_config(
        &[],
        &[],
        "proxy_auth = \"ops:hunter2\"\nlisten = \"0.0.0.0:8080\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("proxy_auth = \"ops:********\""), "{out}");
    assert!(!out.contains("hunter2"));
}

#[test]
fn bad_values_exit_2_naming_the_key_and_source() {
    let (code, _, err) = check_config(&[], &[], "max_connections = \"many\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("grantdoctor.toml") && err.contains("max_connections"),
        "{err}"
    );
    let (code, _, err) = check_config(&[], &[], "no_such_key = 1\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("no_such_key"), "{err}");
    let (code, _, err) = check_config(&[], &[("GRANTDOCTOR_MAX_CONNECTIONS", "lots")], "");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("GRANTDOCTOR_MAX_CONNECTIONS (environment)")
            && err.contains("--max-connections"),
        "{err}"
    );
    let (code, _, err) = check_config(&[], &[], "listen = \"0.0.0.0:8080\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("not a loopback address"), "{err}");
}

#[test]
fn the_approval_limit_and_the_dead_token_breaker_are_run_settings() {
    let (code, out, err) = check_config(&[], &[], "");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("approval_limit = 5  # default"), "{out}");
    assert!(
        out.contains("dead_token_breaker = \"on\"  # default"),
        "{out}"
    );
    let (code, out, err) = check_config(
        &["--dead-token-breaker", "off"],
        &[("GRANTDOCTOR_APPROVAL_LIMIT", "7")],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("approval_limit = 7  # env GRANTDOCTOR_APPROVAL_LIMIT"),
        "{out}"
    );
    assert!(
        out.contains("dead_token_breaker = \"off\"  # flag --dead-token-breaker"),
        "{out}"
    );
    let (_, out, _) = check_config(
        &[],
        &[],
        "approval_limit = 3\ndead_token_breaker = \"off\"\n",
    );
    assert!(out.contains("approval_limit = 3  # file"), "{out}");
    assert!(
        out.contains("dead_token_breaker = \"off\"  # file"),
        "{out}"
    );
    // Salesforce keeps at least one token: zero is refused from every source.
    let (code, _, err) = check_config(&["--approval-limit", "0"], &[], "");
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = check_config(&[], &[], "approval_limit = 0\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("approval_limit") && err.contains("at least 1"),
        "{err}"
    );
    let (code, _, err) = check_config(&[], &[], "dead_token_breaker = \"maybe\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("dead_token_breaker"), "{err}");
}

#[test]
fn check_config_says_where_each_value_came_from() {
    let (code, out, err) = check_config(
        &["--max-connections", "9"],
        &[("GRANTDOCTOR_DRAIN_TIMEOUT", "3")],
        "retention_days = 30\n[refresh_policies]\n\"3MVG9x\" = \"immediate\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "max_connections = 9  # flag --max-connections",
        "drain_timeout = 3  # env GRANTDOCTOR_DRAIN_TIMEOUT",
        "retention_days = 30  # file",
        "idle_timeout = 300  # default",
        "[refresh_policies]  # file",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line} missing from:\n{out}"
        );
    }
    assert!(
        out.starts_with("# config file: ") && out.lines().next().unwrap().ends_with("(--config)"),
        "{out}"
    );
    // Still a configuration file: the output parses as TOML.
    let parsed: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(parsed["max_connections"].as_integer(), Some(9));
}

#[test]
fn listen_addresses_in_the_file_take_host_names() {
    let (code, out, err) = check_config(
        &[],
        &[],
        "listen = \"localhost:8080\"\nadmin = \"localhost:9191\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("listen = \"127.0.0.1:8080\"  # file"), "{out}");
    assert!(out.contains("admin = \"127.0.0.1:9191\"  # file"), "{out}");
    let (code, out, err) = check_config(&["--listen", "localhost:8282"], &[], "");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("listen = \"127.0.0.1:8282\"  # flag --listen"),
        "{out}"
    );
    let (code, _, err) = check_config(&[], &[], "listen = \"no-such-host.invalid:8080\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("key `listen`") && err.contains("does not resolve"),
        "{err}"
    );
}

#[test]
fn the_ledger_sync_knob_stays_out_of_help_but_check_config_shows_it() {
    let (code, out, err) = check_config(&[], &[], "");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("ledger_sync = \"durable\"  # default"),
        "{out}"
    );
    let env = [("GRANTDOCTOR_LEDGER_SYNC", "write-behind")];
    let (code, out, err) = check_config(&[], &env, "");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("ledger_sync = \"write-behind\"  # env GRANTDOCTOR_LEDGER_SYNC"),
        "{out}"
    );
    let (_, out, _) = check_config(&[], &[], "ledger_sync = \"write-behind\"\n");
    assert!(
        out.contains("ledger_sync = \"write-behind\"  # file"),
        "{out}"
    );
    let (code, _, err) = check_config(&[], &[], "ledger_sync = \"sometimes\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("ledger_sync"), "{err}");
    let help = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&help.stdout).contains("ledger-sync"),
        "a benchmark knob is not offered in --help"
    );
}
