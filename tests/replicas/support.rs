//! The fleet the replica tests run: replicas on one throwaway PostgreSQL in front of the
//! emulator, the requests they are sent, and the waits for what they converge to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::emulator::{EmulatorProcess, HOSTS, encode};
use super::common::postgres::Postgres;
use super::common::stack::Answer;
use super::common::{self, ProxyProcess, client_via};

pub const LOGIN: &str = "login.salesforce.com";
pub const WEB: &str = "3MVG9web";
pub const WEB_SECRET: &str = "web-secret";
pub const ALICE: &str = "alice@acme.com";
pub const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub struct Replica {
    pub proxy: ProxyProcess,
    pub client: reqwest::Client,
}

pub struct Fleet {
    pub emu: EmulatorProcess,
    pub pg: Postgres,
    pub replicas: Vec<Replica>,
    /// Every authorization code [`Fleet::login`] exchanged: secrets a dump must not hold.
    pub codes: std::sync::Mutex<Vec<String>>,
}

pub fn replica_args(emu: &EmulatorProcess, pg: &Postgres, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--store".to_owned(),
        pg.url(),
        "--upstream-ca".into(),
        emu.ca_pem().display().to_string(),
    ];
    for host in HOSTS {
        args.push("--resolve".into());
        args.push(format!("{host}:443={}", emu.addr));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The fingerprint key every replica of a fleet is given (as one Secret would be).
pub const FLEET_KEY: [u8; 32] = [7; 32];

pub fn replica(args: &[String]) -> Replica {
    replica_with_key(args, &FLEET_KEY)
}

pub fn replica_with_key(args: &[String], key: &[u8; 32]) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/fingerprint.key"), key).unwrap();
    let proxy = ProxyProcess::start_in(dir, args);
    let client = client_via(&proxy, &[&proxy.ca_pem()], false);
    Replica { proxy, client }
}

impl Fleet {
    /// `n` replicas on one database.
    pub fn start(n: usize, extra: &[&str]) -> Self {
        let pg = Postgres::start();
        let emu = EmulatorProcess::start();
        let args = replica_args(&emu, &pg, extra);
        let replicas = (0..n).map(|_| replica(&args)).collect();
        Self {
            emu,
            pg,
            replicas,
            codes: Default::default(),
        }
    }

    pub async fn token(&self, at: usize, form: &[(&str, &str)]) -> Answer {
        self.try_token(at, form).await.unwrap()
    }

    /// The same, for a replica that may die on the way.
    pub async fn try_token(&self, at: usize, form: &[(&str, &str)]) -> reqwest::Result<Answer> {
        let response = self.replicas[at]
            .client
            .post(format!("https://{LOGIN}/services/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form))
            .send()
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The web-server flow, its code exchanged through replica `at`: a new refresh token.
    pub async fn login(&self, at: usize) -> String {
        let code = self
            .emu
            .authorize(WEB, ALICE, "api refresh_token", None)
            .await;
        self.codes.lock().unwrap().push(code.clone());
        let answer = self
            .token(
                at,
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", WEB),
                    ("client_secret", WEB_SECRET),
                    ("code", &code),
                    ("redirect_uri", "https://app.example.com/callback"),
                ],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["refresh_token"].as_str().unwrap().to_owned()
    }

    /// Rotation on, a login through replica 0 and its refresh there: the token rotated away,
    /// the one that replaced it, and the access token issued with it.
    pub async fn rotated_once(&self) -> (String, String, String) {
        self.rotate().await;
        let first = self.login(0).await;
        let rotated = self.refresh(0, &first).await;
        assert_eq!(rotated.status, 200, "{}", rotated.body);
        let second = rotated.body["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(second, first);
        let access = rotated.body["access_token"].as_str().unwrap().to_owned();
        (first, second, access)
    }

    /// A refresh token issued before grantdoctor watched: no replica has seen it.
    pub async fn unseen_token(&self) -> String {
        self.emu
            .web_login(WEB, WEB_SECRET, ALICE, "api refresh_token")
            .await["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn refresh(&self, at: usize, token: &str) -> Answer {
        self.token(
            at,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", WEB),
                ("refresh_token", token),
            ],
        )
        .await
    }

    pub async fn upstream_refreshes(&self) -> usize {
        self.upstream("refresh_token").await.len()
    }

    /// The requests of one grant type in the emulator's request log.
    pub async fn upstream(&self, grant_type: &str) -> Vec<Value> {
        self.emu.requests_of(grant_type).await
    }

    pub async fn rotate(&self) {
        self.emu
            .control("PATCH", "apps/3MVG9web", json!({"rotation": true}))
            .await;
    }

    pub fn admin(&self, at: usize, path: &str) -> (u16, String) {
        common::raw::admin_get(self.replicas[at].proxy.admin.unwrap(), path).unwrap()
    }

    pub fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| r.proxy.raw_log())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `run` on `store` with a data directory of its own, expected to refuse to start.
pub fn refused_start(dir: &std::path::Path, store: &str) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args(["run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--ca-dir", &dir.join("certs").display().to_string()])
        .args(["--data-dir", &dir.join("data").display().to_string()])
        .args(["--store", store])
        .output()
        .unwrap();
    assert!(!out.status.success(), "started: {out:?}");
    out
}

/// `callers` identical refreshes of `token` at once, round-robin over the replicas; each
/// must be answered 200. Returns the distinct refresh tokens they got.
pub async fn storm(
    fleet: &Arc<Fleet>,
    callers: usize,
    token: &str,
) -> std::collections::HashSet<String> {
    at_once(fleet, callers, token)
        .await
        .into_iter()
        .map(|answer| {
            assert_eq!(answer.status, 200, "{}", answer.body);
            answer.body["refresh_token"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// `callers` identical refreshes of `token` at once, round-robin over the replicas.
pub async fn at_once(fleet: &Arc<Fleet>, callers: usize, token: &str) -> Vec<Answer> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..callers {
        let (fleet, token) = (fleet.clone(), token.to_owned());
        tasks.spawn(async move { fleet.refresh(i % fleet.replicas.len(), &token).await });
    }
    let mut answers = Vec::with_capacity(callers);
    while let Some(done) = tasks.join_next().await {
        answers.push(done.unwrap());
    }
    answers
}

pub fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

pub fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .map(|n| n.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or_else(|| panic!("{series} not in the metrics"))
}

/// Polls `check` (every 200 ms) until it gives `Ok`, for at most `within`; on timeout the
/// test fails saying what it awaited and what `check` last saw.
pub async fn eventually<T, F, Fut>(within: Duration, awaited: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(done) => return done,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} awaiting {awaited}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Replica `at`'s readiness, as `eventually` wants it.
pub fn readyz_ok(fleet: &Fleet, at: usize) -> Result<(), String> {
    match fleet.admin(at, "/readyz") {
        (200, ready) if ready == "ok\n" => Ok(()),
        (status, ready) => Err(format!("{status} {ready}")),
    }
}

/// A configuration file with one `[[recovery.jwt_bearer]]` for the web app acting as Alice.
/// Three replicas that recover with a JWT bearer key, coalescing off (every replica's refresh
/// really fails upstream and asks for a recovery, so only the fleet's JWT lease stands
/// between the replicas and Salesforce), after six authorizations spread over them: the
/// fleet, the six tokens (the first evicted), and the configuration they read.
pub async fn recovering_fleet() -> (Arc<Fleet>, Vec<String>, tempfile::TempDir) {
    let config = recovery_config();
    let path = config.path().join("grantdoctor.toml").display().to_string();
    let fleet = Fleet::start(3, &["--config", &path, "--coalesce-refresh", "off"]);
    let mut tokens = Vec::new();
    for at in [0, 1, 2, 0, 1, 2] {
        tokens.push(fleet.login(at).await);
    }
    fleet.emu.control("DELETE", "requests", Value::Null).await;
    (Arc::new(fleet), tokens, config)
}

pub fn recovery_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let key = common::jwt::fixture("jwt/app-private.pem");
    std::fs::write(
        dir.path().join("grantdoctor.toml"),
        format!(
            "[[recovery.jwt_bearer]]\nclient_id = \"{WEB}\"\nprivate_key = {key:?}\nsubject = \"{ALICE}\"\n"
        ),
    )
    .unwrap();
    dir
}

/// How each recovery a replica logged got its token: `exchanged`, `shared`, `reused`.
pub fn recoveries(replica: &Replica) -> Vec<String> {
    replica
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["event"] == "recovered")
        .map(|e| e["how"].as_str().unwrap_or("").to_owned())
        .collect()
}
