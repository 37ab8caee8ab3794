//! The README's client recipes, run as written: each block marked `<!-- recipe: NAME -->`
//! (a shell block to run) or `<!-- recipe: NAME file=FILE -->` (a file it runs) is taken from
//! README.md and run through the real proxy to the emulator. Each recipe refreshes a live token
//! (a 200, no cause) and a dead one (the `invalid_grant` with the diagnosed cause it prints).
//!
//! What the test changes, and only that: the proxy's address (`127.0.0.1:8080` in the README,
//! a port-0 listener here), `HTTPS_PROXY` and the `SF_*` variables set by the test instead of
//! the README's placeholders, `sudo` dropped, and for Java the trust store: `keytool -cacerts`
//! would change the JDK's own store on this machine, so the test imports into a copy of it
//! (`-keystore`) and points `java` at that copy.
//!
//! The clients come from `tests/e2e/setup.sh` (Python venv, node_modules) and Debian (curl,
//! Java 17); `.ci/run` installs them. A missing client fails its test, naming what to install.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::stack::Stack;

const WEB: &str = "3MVG9web";
const WEB_SECRET: &str = "web-secret";
const ALICE: &str = "alice@acme.com";
const DEAD: &str = "5Aep861.never.issued.token";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A recipe of the README: the files it needs and the shell lines that run it.
#[derive(Default, Debug)]
struct Recipe {
    files: Vec<(String, String)>,
    run: String,
}

/// Every marked block of README.md, by recipe name.
fn readme_recipes() -> BTreeMap<String, Recipe> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut recipes: BTreeMap<String, Recipe> = BTreeMap::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .trim()
            .strip_prefix("<!-- recipe: ")
            .and_then(|m| m.strip_suffix(" -->"))
        else {
            continue;
        };
        let mut words = marker.split_whitespace();
        let name = words.next().expect("a recipe name").to_owned();
        let file = words
            .find_map(|w| w.strip_prefix("file="))
            .map(str::to_owned);
        let fence = lines
            .next()
            .filter(|l| l.starts_with("```"))
            .unwrap_or_else(|| panic!("recipe {name}: a fenced block right after the marker"));
        assert!(
            fence.len() > 3,
            "recipe {name}: the block names its language"
        );
        let mut block = String::new();
        for line in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            block.push_str(line);
            block.push('\n');
        }
        let recipe = recipes.entry(name).or_default();
        match file {
            Some(file) => recipe.files.push((file, block)),
            None => recipe.run.push_str(&block),
        }
    }
    recipes
}

fn recipe(name: &str) -> Recipe {
    let mut all = readme_recipes();
    let recipe = all
        .remove(name)
        .unwrap_or_else(|| panic!("README.md has no recipe {name}"));
    assert!(!recipe.run.is_empty(), "recipe {name} says how to run it");
    recipe
}

fn e2e(path: &str) -> PathBuf {
    let path = root().join("tests/e2e").join(path);
    assert!(
        path.exists(),
        "{} is missing: run tests/e2e/setup.sh (.ci/run does)",
        path.display()
    );
    path
}

fn on_path(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    assert!(
        found,
        "{name} is missing: apt-get install {package} (.ci/run does)"
    );
}

/// The directory a user would run a recipe in: `certs/` of the proxy, the recipe's files, and
/// `node_modules` of tests/e2e for the Node recipes.
struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    fn new(stack: &Stack, recipe: &Recipe, local: &dyn Fn(&str) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(stack.proxy.ca_dir(), dir.path().join("certs")).unwrap();
        let modules = root().join("tests/e2e/node_modules");
        if modules.exists() {
            std::os::unix::fs::symlink(modules, dir.path().join("node_modules")).unwrap();
        }
        for (file, text) in &recipe.files {
            std::fs::write(dir.path().join(file), local(text)).unwrap();
        }
        Self { dir }
    }

    /// Runs `script` with bash in this directory, the proxy and a token in the environment.
    fn run(&self, script: &str, proxy_url: &str, token: &str) -> String {
        let venv = root().join("tests/e2e/.venv/bin");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(venv).chain(std::env::split_paths(&path)))
            .unwrap();
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("HTTPS_PROXY", proxy_url)
            .env("SF_CLIENT_ID", WEB)
            .env("SF_REFRESH_TOKEN", token);
        for var in [
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
            "ALL_PROXY",
            "all_proxy",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "SSL_CERT_FILE",
            "NODE_USE_ENV_PROXY",
            "JAVA_TOOL_OPTIONS",
        ] {
            command.env_remove(var);
        }
        let output = bounded(command, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "the recipe failed:\n{script}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

fn bounded(mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{command:?} did not finish within {limit:?}");
        }
    }
}

/// A fresh refresh token of the web app, straight from the emulator (a proxy with
/// `--proxy-auth` would refuse the test's own client).
async fn live_token(stack: &Stack) -> String {
    let body = stack
        .emu
        .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
        .await;
    body["refresh_token"].as_str().unwrap().to_owned()
}

/// Runs recipe `name` for a live and a dead token and checks what it printed.
async fn runs_and_sees_the_cause(name: &str, extra_proxy_args: &[&str], proxy_auth: Option<&str>) {
    runs_with(name, recipe(name), extra_proxy_args, proxy_auth).await
}

async fn runs_with(
    name: &str,
    recipe: Recipe,
    extra_proxy_args: &[&str],
    proxy_auth: Option<&str>,
) {
    let stack = Stack::start(extra_proxy_args);
    let addr = stack.proxy.addr;
    let local = |text: &str| {
        text.replace("127.0.0.1:8080", &addr.to_string())
            .replace("proxyPort=8080", &format!("proxyPort={}", addr.port()))
    };
    let proxy_url = match proxy_auth {
        Some(auth) => format!("http://{auth}@{addr}"),
        None => format!("http://{addr}"),
    };
    let script = java_trust_store_copy(&local(&recipe.run));
    let work = WorkDir::new(&stack, &recipe, &local);
    let started = Instant::now();

    let token = live_token(&stack).await;
    let ok = work.run(&script, &proxy_url, &token);
    assert!(
        ok.lines().any(|l| l.starts_with("200")),
        "{name}: a live refresh prints 200 first: {ok}"
    );
    assert!(
        !ok.contains("sf.refresh."),
        "{name}: no cause on a success: {ok}"
    );
    assert!(ok.contains("access_token"), "{name}: {ok}");

    let failed = work.run(&script, &proxy_url, DEAD);
    let status_line = failed
        .lines()
        .find(|l| l.starts_with("400"))
        .unwrap_or_else(|| panic!("{name}: a dead token prints 400: {failed}"));
    assert!(
        status_line.contains(" sf.refresh."),
        "{name}: the status line names the cause header: {failed}"
    );
    assert!(failed.contains("invalid_grant"), "{name}: {failed}");
    assert!(
        failed.contains("\"grantdoctor\""),
        "{name}: the body's grantdoctor member: {failed}"
    );
    let event = stack
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert!(
        status_line.contains(event["cause"].as_str().unwrap()),
        "{name}: the cause printed is the one logged: {status_line} / {event}"
    );
    assert!(!stack.proxy.raw_log().contains(&token));
    eprintln!("{name}: ran in {:?}", started.elapsed());
}

/// The Java recipe imports into the JDK's own store (`keytool -cacerts`); here it imports into
/// a copy of that store, which `java` is then pointed at.
fn java_trust_store_copy(script: &str) -> String {
    if !script.contains("keytool") && !script.contains("java ") {
        return script.to_owned();
    }
    let script = script.replace("sudo ", "");
    let copy = "cp \"$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.home = //p')/lib/security/cacerts\" cacerts.jks && chmod u+w cacerts.jks\n";
    let script = script
        .replace("keytool -importcert -cacerts", "keytool -importcert -keystore cacerts.jks")
        .replace(
            "java -D",
            "java -Djavax.net.ssl.trustStore=cacerts.jks -Djavax.net.ssl.trustStorePassword=changeit -D",
        );
    assert!(
        script.contains("-keystore cacerts.jks") && script.contains("trustStore=cacerts.jks"),
        "the Java recipe's keytool and java lines are where the test expects them: {script}"
    );
    format!("{copy}{script}")
}

#[tokio::test]
async fn the_curl_recipe_sees_the_cause() {
    on_path("curl", "curl");
    runs_and_sees_the_cause("curl", &[], None).await;
}

#[tokio::test]
async fn the_python_requests_recipe_sees_the_cause() {
    e2e(".venv/lib");
    runs_and_sees_the_cause("python-requests", &[], None).await;
}

#[tokio::test]
async fn the_node_https_proxy_agent_recipe_sees_the_cause() {
    e2e("node_modules/https-proxy-agent");
    runs_and_sees_the_cause("node-https-proxy-agent", &[], None).await;
}

#[tokio::test]
async fn the_node_undici_env_http_proxy_agent_recipe_sees_the_cause() {
    e2e("node_modules/undici");
    runs_and_sees_the_cause("node-undici", &[], None).await;
}

#[tokio::test]
async fn the_node_axios_recipe_sees_the_cause() {
    e2e("node_modules/axios");
    runs_and_sees_the_cause("node-axios", &[], None).await;
}

#[tokio::test]
async fn the_java_httpclient_recipe_sees_the_cause() {
    on_path("javac", "openjdk-17-jdk-headless");
    runs_and_sees_the_cause("java", &[], None).await;
}

#[tokio::test]
async fn the_java_recipe_through_proxy_auth_sees_the_cause() {
    on_path("javac", "openjdk-17-jdk-headless");
    // The Java files and trust store of the `java` recipe, run the proxy-auth way.
    let mut java = recipe("java");
    let auth = recipe("java-proxy-auth");
    let keytool: String = java
        .run
        .lines()
        .filter(|l| l.contains("keytool"))
        .map(|l| format!("{l}\n"))
        .collect();
    java.run = format!("{keytool}{}", auth.run);
    runs_with(
        "java-proxy-auth",
        java,
        &["--proxy-auth", "app:s3cret"],
        Some("app:s3cret"),
    )
    .await;
}

#[test]
fn the_readme_never_tells_node_20_users_to_set_node_use_env_proxy_alone() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for line in readme.lines().filter(|l| l.contains("NODE_USE_ENV_PROXY")) {
        assert!(
            line.contains("24"),
            "NODE_USE_ENV_PROXY needs Node 24: {line}"
        );
    }
    let names: Vec<String> = readme_recipes().into_keys().collect();
    for wanted in [
        "curl",
        "python-requests",
        "node-https-proxy-agent",
        "node-undici",
        "node-axios",
        "java",
        "java-proxy-auth",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "recipe {wanted} in {names:?}"
        );
    }
    assert!(readme.contains("keytool -importcert -cacerts -noprompt"));
    assert!(readme.contains("-Djdk.http.auth.tunneling.disabledSchemes="));
}

/// The `sh` blocks of a section of a Markdown file, in order.
fn sh_blocks(file: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("{file}: no {heading}"));
    let section = &text[start..];
    let section = &section[..section[heading.len()..]
        .find("\n## ")
        .map_or(section.len(), |end| end + heading.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| block[..block.find("```").unwrap()].to_owned())
        .collect()
}

/// A one-line `grantdoctor ...` command of the docs, as arguments.
fn command_words(block: &str) -> Vec<String> {
    let line = block
        .lines()
        .find(|l| l.starts_with("grantdoctor "))
        .unwrap_or_else(|| panic!("a grantdoctor command in {block}"));
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

#[tokio::test]
async fn the_emulator_rehearsal_in_the_docs_runs_as_written() {
    on_path("jq", "jq");
    on_path("curl", "curl");
    let blocks = sh_blocks("docs/emulator.md", "## Rehearsal");
    assert!(blocks.len() >= 7, "{blocks:?}");
    let work = tempfile::tempdir().unwrap();
    let at = |p: &str| work.path().join(p).display().to_string();

    // The emulator and the proxy as the docs start them, on port 0 and with their files in the
    // work directory instead of the repository.
    let mut emulator = command_words(&blocks[0]);
    emulator.extend(["--listen", "127.0.0.1:0", "--ca-dir"].map(String::from));
    emulator.push(at("emulator-certs"));
    emulator.extend(["--log-format", "json"].map(String::from));
    let emulator = common::Spawned::start(&emulator);
    let emu_port = emulator.addr.port().to_string();

    let mut proxy: Vec<String> = command_words(&blocks[1])
        .into_iter()
        .map(|w| {
            w.replace("emulator-certs/", &format!("{}/", at("emulator-certs")))
                .replace("127.0.0.1:8443", &format!("127.0.0.1:{emu_port}"))
        })
        .collect();
    proxy.extend(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"].map(String::from));
    proxy.extend([
        "--ca-dir".into(),
        at("certs"),
        "--data-dir".into(),
        at("data"),
    ]);
    proxy.extend(["--log-format", "json"].map(String::from));
    let proxy = common::Spawned::start(&proxy);

    let script = blocks[2..]
        .join("\n")
        .replace("localhost:8443", &format!("localhost:{emu_port}"))
        .replace("127.0.0.1:8080", &proxy.addr.to_string());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .parent()
        .unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(work.path())
        .env("PATH", path)
        .env_remove("https_proxy")
        .env_remove("no_proxy");
    let output = bounded(command, Duration::from_secs(90));
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the rehearsal failed: {said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The four diagnoses the docs promise, in their order, each in the body and the headers.
    let mut rest = said.as_str();
    for cause in [
        "sf.refresh.revoked",
        "sf.refresh.approval_limit_evicted",
        "sf.refresh.rotated_token_reused",
        "sf.refresh.policy_immediate_expiry",
    ] {
        let body = format!("\"cause\":\"{cause}\"");
        let at_body = rest
            .find(&body)
            .unwrap_or_else(|| panic!("{cause} next in: {said}"));
        rest = &rest[at_body..];
        let header = format!("grantdoctor-cause: {cause}");
        assert!(rest.contains(&header), "{header} in: {said}");
    }
    assert!(
        said.contains("grantdoctor-blocked: rotated-refresh-token"),
        "{said}"
    );
}
