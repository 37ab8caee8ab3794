//! Where the configuration comes from: `--config`, then `GRANTDOCTOR_CONFIG`, then
//! `./config/grantdoctor.toml`, then `/etc/grantdoctor/grantdoctor.toml` (that last one is
//! checked by a unit test in `src/config.rs`: writing `/etc` here would reach every other test
//! running on the machine); and `check-config`'s checks of the data and CA directories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// `grantdoctor check-config ARGS` in `cwd`, with `GRANTDOCTOR_CONFIG` set or removed.
fn check_config(cwd: &Path, args: &[&str], config_env: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_grantdoctor"));
    command.arg("check-config").args(args).current_dir(cwd);
    match config_env {
        Some(path) => command.env("GRANTDOCTOR_CONFIG", path),
        None => command.env_remove("GRANTDOCTOR_CONFIG"),
    };
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_flag_beats_the_variable_which_beats_the_working_directory_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/grantdoctor.toml"),
        "max_connections = 11\n",
    )
    .unwrap();
    let from_env = dir.path().join("env.toml");
    std::fs::write(&from_env, "max_connections = 12\n").unwrap();
    let from_flag = dir.path().join("flag.toml");
    std::fs::write(&from_flag, "max_connections = 13\n").unwrap();

    let out = check_config(dir.path(), &[], None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("max_connections = 11  # file"), "{stdout}");
    assert!(
        stdout.starts_with("# config file: config/grantdoctor.toml (found)\n"),
        "{stdout}"
    );

    let out = check_config(dir.path(), &[], Some(&from_env));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("max_connections = 12  # file"), "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "# config file: {} (GRANTDOCTOR_CONFIG)\n",
            from_env.display()
        )),
        "{stdout}"
    );

    let flag = from_flag.to_str().unwrap();
    let out = check_config(dir.path(), &["--config", flag], Some(&from_env));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("max_connections = 13  # file"), "{stdout}");
    assert!(
        stdout.starts_with(&format!("# config file: {flag} (--config)\n")),
        "{stdout}"
    );
}

#[test]
fn a_named_file_that_is_missing_is_an_error_and_no_file_at_all_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = check_config(dir.path(), &[], Some(&missing));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("--config {}: No such file", missing.display())),
        "{err}"
    );

    let out = check_config(dir.path(), &[], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("max_connections = 4096  # default"),
        "{stdout}"
    );
    if !Path::new("/etc/grantdoctor/grantdoctor.toml").exists() {
        assert!(stdout.starts_with("# config file: none"), "{stdout}");
    }
}

#[test]
fn check_config_reports_usable_data_and_ca_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_config(dir.path(), &[], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("# data_dir data: will be created (in .)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("# ca_dir certs: will be created"),
        "{stdout}"
    );
    // check-config creates nothing.
    assert!(!dir.path().join("data").exists() && !dir.path().join("certs").exists());

    let ca = dir.path().join("ca");
    let init = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["ca", "init", "--ca-dir", ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let out = check_config(dir.path(), &["--ca-dir", ca.to_str().unwrap()], None);
    assert!(
        text(&out.stdout).contains(": CA readable"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_data_directory_that_cannot_be_created_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    for data in ["file", "file/data"] {
        let out = check_config(dir.path(), &["--data-dir", data], None);
        assert_eq!(out.status.code(), Some(1), "{data}");
        let err = text(&out.stderr);
        assert!(
            err.contains("--data-dir") && err.contains("not a directory"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// `check-config ARGS` as uid/gid 10001 without groups when the tests run as root (root may
/// write anywhere), else as the current user.
fn check_config_unprivileged(dir: &Path, args: &[&str]) -> Output {
    let bin = dir.join("grantdoctor");
    std::fs::copy(env!("CARGO_BIN_EXE_grantdoctor"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = if rustix::process::getuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "10001", "--regid", "10001", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    command
        .arg("check-config")
        .args(args)
        .current_dir(dir)
        .env_remove("GRANTDOCTOR_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn directories_the_service_user_cannot_write_or_read_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let inside = locked.join("data");
    let out = check_config_unprivileged(dir.path(), &["--data-dir", inside.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "--data-dir {}: cannot be created",
            inside.display()
        )) && err.contains("not writable"),
        "{err}"
    );

    let ca = dir.path().join("ca");
    let init = Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["ca", "init", "--ca-dir", ca.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(init.status.success());
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(ca.join("ca.pem"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let data = dir.path().join("data-ok");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = check_config_unprivileged(
        dir.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--ca-dir",
            ca.to_str().unwrap(),
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("loading the CA") && err.contains("Permission denied"),
        "{err}"
    );
}
