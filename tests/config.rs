//! Configuration sources: flags over environment over the file over defaults, and clear errors.

mod common;

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

#[test]
fn a_file_value_is_refused_like_the_same_flag_naming_the_key() {
    for (file, flag, reason) in [
        (
            "approval_limit = 0\n",
            ["--approval-limit", "0"],
            "must be at least 1",
        ),
        (
            "confirm_timeout = 61\n",
            ["--confirm-timeout", "61"],
            "must be between 0 and 60 seconds",
        ),
        (
            "annotate_description = \"loud\"\n",
            ["--annotate-description", "loud"],
            "expected off or append",
        ),
        (
            "connect_ports = [70000]\n",
            ["--connect-port", "70000"],
            "70000",
        ),
        (
            "refresh_policies = { \"3MVG9x\" = \"sometimes\" }\n",
            ["--refresh-policy", "3MVG9x=sometimes"],
            "sometimes",
        ),
        (
            "gateway = [\"ftp://acme\"]\n",
            ["--gateway", "ftp://acme"],
            "ftp://acme",
        ),
    ] {
        let (code, _, err) = check_config(&[], &[], file);
        assert_eq!(code, Some(2), "{file}: {err}");
        let key = file.split([' ', '\n']).next().unwrap();
        assert!(
            err.contains(&format!("grantdoctor.toml: key `{key}`: ")) && err.contains(reason),
            "{file}: {err}"
        );
        let (code, _, flag_err) = check_config(&flag, &[], "");
        assert_eq!(code, Some(2), "{flag:?}: {flag_err}");
        // clap words a choice of names its own way; every other reason is the same text.
        let reason = reason.replace("expected off or append", "possible values: off, append");
        assert!(flag_err.contains(&reason), "{flag:?}: {flag_err}");
    }
    // A value of the wrong kind says which kind the key takes.
    let (code, _, err) = check_config(&[], &[], "max_connections = \"5\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("key `max_connections`: expected a whole number, found string"),
        "{err}"
    );
    // A list item is one value: a comma in a path is not a separator.
    let (code, out, err) = check_config(&[], &[], "upstream_ca = [\"a,b.pem\"]\n");
    assert_eq!(code, Some(2), "the file does not exist: {out}");
    assert!(err.contains("a,b.pem"), "{err}");
}

#[test]
fn the_old_connect_ports_variable_is_read_below_the_new_one() {
    let old = ("GRANTDOCTOR_CONNECT_PORTS", "8443");
    let (code, out, err) = check_config(&[], &[old], "connect_ports = [9443]\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("connect_ports = [8443]  # env GRANTDOCTOR_CONNECT_PORTS"),
        "{out}"
    );
    let new = ("GRANTDOCTOR_CONNECT_PORT", "443,8443");
    let (_, out, _) = check_config(&[], &[old, new], "");
    assert!(
        out.contains("connect_ports = [443, 8443]  # env GRANTDOCTOR_CONNECT_PORT"),
        "{out}"
    );
    let (_, out, _) = check_config(&["--connect-port", "1443"], &[old], "");
    assert!(
        out.contains("connect_ports = [1443]  # flag --connect-port"),
        "{out}"
    );
    let (code, _, err) = check_config(&[], &[("GRANTDOCTOR_CONNECT_PORTS", "https")], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("GRANTDOCTOR_CONNECT_PORTS"), "{err}");
}

#[test]
fn the_token_body_caps_are_settings() {
    let (code, out, err) = check_config(&[], &[], "");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("max_token_request_bytes = 65536  # default"),
        "{out}"
    );
    assert!(
        out.contains("max_token_response_bytes = 262144  # default"),
        "{out}"
    );
    let env = [("GRANTDOCTOR_MAX_TOKEN_RESPONSE_BYTES", "1000")];
    let (_, out, _) = check_config(&[], &env, "max_token_request_bytes = 2048\n");
    assert!(
        out.contains("max_token_request_bytes = 2048  # file"),
        "{out}"
    );
    assert!(
        out.contains("max_token_response_bytes = 1000  # env GRANTDOCTOR_MAX_TOKEN_RESPONSE_BYTES"),
        "{out}"
    );
}

/// A proxy whose configuration file caps token bodies small, in front of the test origin.
fn capped_proxy(file: &str) -> (common::Origin, common::ProxyProcess) {
    let origin = common::Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grantdoctor.toml");
    std::fs::write(&path, file).unwrap();
    let mut args = common::route_to(&origin, &["login.salesforce.com"]);
    args.extend(["--config".into(), path.display().to_string()]);
    let proxy = common::ProxyProcess::start_in(dir, &args);
    (origin, proxy)
}

#[tokio::test]
async fn a_token_request_over_the_configured_cap_is_refused_unread() {
    let (_origin, proxy) = capped_proxy("max_token_request_bytes = 1024\n");
    let client = common::client_via(&proxy, &[&proxy.ca_pem()], false);
    let send = |padding: usize| {
        client
            .post("https://login.salesforce.com/services/oauth2/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=refresh_token&refresh_token=5Aep861x&p={}",
                "x".repeat(padding)
            ))
            .send()
    };
    let response = send(2048).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.headers()["grantdoctor-error"],
        "token-request-too-large"
    );
    assert!(response.headers().get("x-received-bytes").is_none());
    let answer: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("over 1024 bytes"),
        "{answer}"
    );
    let event = proxy.wait_for_event(|e| e["event"] == "token_request_refused");
    assert_eq!(event["cap_bytes"], 1024);
    // Under the cap, the request is forwarded and its failure diagnosed.
    let response = send(100).await.unwrap();
    assert!(response.headers().get("x-received-bytes").is_some());
    assert!(response.headers().get("grantdoctor-cause").is_some());
}

#[tokio::test]
async fn a_token_response_over_the_configured_cap_is_forwarded_uninspected() {
    let (_origin, proxy) = capped_proxy("max_token_response_bytes = 16\n");
    let client = common::client_via(&proxy, &[&proxy.ca_pem()], false);
    let response = client
        .post("https://login.salesforce.com/services/oauth2/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&refresh_token=5Aep861x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.headers().get("grantdoctor-cause").is_none());
    let body = response.text().await.unwrap();
    assert!(body.contains("expired access/refresh token"), "{body}");
    let event = proxy.wait_for_event(|e| e["event"] == "not_inspected");
    assert_eq!(event["reason"], "response body over the cap");
}

#[test]
fn the_store_comes_from_the_file_key_or_the_environment_and_its_password_is_masked_in_both() {
    let (code, out, err) = check_config(
        &[],
        &[],
        "store = \"postgres://gd:file-secret-pw@db.internal:5432/ledger?sslmode=require\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("store = \"postgres://gd:****@db.internal:5432/ledger?sslmode=verify-full\""),
        "{out}"
    );
    assert!(!out.contains("file-secret-pw") && !err.contains("file-secret-pw"));

    let (code, out, err) = check_config(
        &[],
        &[(
            "GRANTDOCTOR_STORE",
            "postgres://gd:env-secret-pw@db.internal:5432/ledger",
        )],
        "store = \"sqlite\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("store = \"postgres://gd:****@db.internal:5432/ledger\""),
        "{out}"
    );
    assert!(out.contains("env GRANTDOCTOR_STORE"), "{out}");
    assert!(!out.contains("env-secret-pw") && !err.contains("env-secret-pw"));
}
