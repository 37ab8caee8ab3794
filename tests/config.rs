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
