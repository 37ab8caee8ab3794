//! Many replicas, one memory: two or three real grantdoctor processes sharing one real
//! PostgreSQL (`--store postgres://…`), in front of the emulator. A history seen in parts by
//! different replicas is diagnosed as one; a rotated token is guarded on every replica; an
//! identical refresh anywhere in the fleet goes upstream once; the database going away
//! costs no application traffic.

#[path = "replicas/cache.rs"]
mod cache;
mod common;
#[path = "replicas/lease.rs"]
mod lease;
#[path = "replicas/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::emulator::EmulatorProcess;
use common::postgres;
use common::postgres::Postgres;
use serde_json::{Value, json};
use support::{
    ALICE, Fleet, JWT_GRANT, WEB, WEB_SECRET, at_once, counter, eventually, header, readyz_ok,
    recoveries, recovering_fleet, refused_start, replica, replica_args, storm,
};

#[tokio::test]
async fn with_ready_requires_store_a_database_outage_takes_the_replica_out_until_it_heals() {
    let fleet = Fleet::start(1, &["--ready-requires-store"]);
    assert_eq!(fleet.admin(0, "/readyz"), (200, "ok\n".to_owned()));
    let token = fleet.login(0).await;
    fleet.pg.stop_server();
    let (fleet, token) = (&fleet, token.as_str());
    eventually(
        Duration::from_secs(20),
        "/readyz to say 503 while the database is down",
        || async move {
            // Traffic still flows; readiness now says the replica should get none.
            let refreshed = fleet.refresh(0, token).await;
            assert_eq!(refreshed.status, 200, "{}", refreshed.body);
            let (status, ready) = fleet.admin(0, "/readyz");
            if status != 503 {
                return Err(format!("{status} {ready}"));
            }
            assert!(ready.contains("store"), "{ready}");
            Ok(())
        },
    )
    .await;
    fleet.pg.start_server();
    eventually(
        Duration::from_secs(20),
        "/readyz to say ok once the database is back",
        || async move {
            let _ = fleet.refresh(0, token).await;
            readyz_ok(fleet, 0)
        },
    )
    .await;
}

#[tokio::test]
async fn a_lease_taken_after_its_taker_gave_up_is_freed_so_the_next_identical_refresh_leads() {
    let fleet = Fleet::start(1, &[]);
    let token = fleet.login(0).await;
    let first = fleet.refresh(0, &token).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let landed_by = fleet.pg.psql("SELECT holder FROM grantdoctor_flights");
    assert_eq!(landed_by.lines().count(), 1, "one flight: {landed_by}");
    fleet.pg.psql(
        "CREATE TABLE flight_log (n serial, holder text, lease_until bigint);
         CREATE FUNCTION log_flight() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO flight_log (holder, lease_until) VALUES (NEW.holder, NEW.lease_until);
         RETURN NEW; END $$;
         CREATE TRIGGER logged AFTER UPDATE ON grantdoctor_flights
         FOR EACH ROW EXECUTE FUNCTION log_flight();",
    );
    // Past the time its answer is kept for twins, the next identical refresh takes the row.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // Another session holds the row: the take waits past its bound, and the replica goes on
    // alone. When the lock goes, the statement commits a lease nobody will land.
    let mut locker = fleet.pg.psql_in_background(
        "BEGIN; SELECT 1 FROM grantdoctor_flights FOR UPDATE; SELECT pg_sleep(3); COMMIT;",
    );
    eventually(Duration::from_secs(10), "the row to be locked", || async {
        let sleeping = fleet.pg.psql(
            "SELECT count(*) FROM pg_stat_activity
             WHERE query LIKE '%pg_sleep(3)%' AND state = 'active' AND pid <> pg_backend_pid()",
        );
        (sleeping.trim() == "1").then_some(()).ok_or(sleeping)
    })
    .await;
    let alone = fleet.refresh(0, &token).await;
    assert_eq!(alone.status, 200, "{}", alone.body);
    assert!(locker.wait().unwrap().success());
    // The lease the late statement took is freed by its holder name: without that, every
    // identical refresh would wait it out (the response timeout and a margin, 62 s here).
    // (Read from the trigger's log: a freed lease may be swept away at once.)
    let landed_by = landed_by.trim();
    eventually(
        Duration::from_secs(15),
        "the orphaned lease to be taken, then freed",
        || async {
            let log = fleet.pg.psql(&format!(
                "SELECT string_agg(CASE WHEN lease_until > 0 THEN 'taken' ELSE 'freed' END, ','
                                   ORDER BY n)
                 FROM flight_log WHERE holder <> '{landed_by}'"
            ));
            (log.trim() == "taken,freed").then_some(()).ok_or(log)
        },
    )
    .await;
    let before = fleet.upstream_refreshes().await;
    let next = fleet.refresh(0, &token).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(
        fleet.upstream_refreshes().await,
        before + 1,
        "it led the refresh"
    );
}

#[tokio::test]
async fn a_replica_prunes_the_shared_store_to_its_row_bound_oldest_first() {
    let fleet = Fleet::start(1, &[]);
    for _ in 0..4 {
        fleet.login(0).await;
    }
    // The oldest record, as a replica long gone would have left it.
    fleet.pg.psql(
        "INSERT INTO grantdoctor_records (kind, key, value, at, seq, writer)
         VALUES ('code', 'fp_0000000000000001', '1', 1000, nextval('grantdoctor_records_seq'), 'gone')",
    );
    let count = || {
        fleet
            .pg
            .psql("SELECT count(*) FROM grantdoctor_records")
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert!(count() > 4, "the logins left records");
    // Another replica with a small bound prunes at start, oldest first.
    let args = replica_args(&fleet.emu, &fleet.pg, &["--ledger-max-rows", "3"]);
    let pruner = replica(&args);
    pruner
        .proxy
        .wait_for_event(|e| e["event"] == "store_pruned");
    assert_eq!(count(), 3);
    let aged = fleet
        .pg
        .psql("SELECT count(*) FROM grantdoctor_records WHERE writer = 'gone'");
    assert_eq!(aged.trim(), "0");
}

#[tokio::test]
async fn a_replica_prunes_the_shared_store_to_its_age_bound_and_stale_rate_shares_and_keeps_what_is_younger()
 {
    let fleet = Fleet::start(1, &[]);
    fleet.login(0).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day_ms = 86_400_000;
    // Records a replica long gone left: one past a 2-day retention, one inside it; its
    // shares of a user's request rate, one last written two hours ago (past the hour a
    // share covers), one ten minutes ago.
    let minute = (now_ms / 60_000).to_string();
    for (kind, key, value, age_ms) in [
        ("code", "fp_00000000000000aa", "1", 3 * day_ms),
        ("code", "fp_00000000000000bb", "1", day_ms),
        ("requests", "00Dold|005old|gone", "1:1", 2 * 3_600_000),
        (
            "requests",
            "00Dnew|005new|gone",
            &format!("{minute}:1"),
            600_000,
        ),
    ] {
        fleet.pg.psql(&format!(
            "INSERT INTO grantdoctor_records (kind, key, value, at, seq, writer)
             VALUES ('{kind}', '{key}', '{value}', {}, nextval('grantdoctor_records_seq'), 'gone')",
            now_ms - age_ms
        ));
    }
    let before = fleet.pg.psql("SELECT count(*) FROM grantdoctor_records");
    let before: u64 = before.trim().parse().unwrap();
    let args = replica_args(&fleet.emu, &fleet.pg, &["--retention-days", "2"]);
    let pruner = replica(&args);
    let pruned = pruner
        .proxy
        .wait_for_event(|e| e["event"] == "store_pruned");
    assert_eq!(pruned["rows"], 2, "{pruned}");
    let left = fleet.pg.psql(
        "SELECT string_agg(key, ',' ORDER BY key) FROM grantdoctor_records WHERE writer = 'gone'",
    );
    assert_eq!(left.trim(), "00Dnew|005new|gone,fp_00000000000000bb");
    let after = fleet.pg.psql("SELECT count(*) FROM grantdoctor_records");
    assert_eq!(after.trim().parse::<u64>().unwrap(), before - 2);
}

#[tokio::test]
async fn five_authorizations_through_one_replica_and_a_sixth_through_another_explain_the_eviction_on_a_third()
 {
    let fleet = Fleet::start(3, &[]);
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(fleet.login(0).await);
    }
    tokens.push(fleet.login(1).await);

    let answer = fleet.refresh(2, &tokens[0]).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["error"], "invalid_grant");
    assert_eq!(answer.cause(), "sf.refresh.approval_limit_evicted");
    assert_eq!(header(&answer, "grantdoctor-basis"), "evidence");
    let evidence = answer.evidence("sf.refresh.approval_limit_evicted");
    assert!(
        evidence.contains("5 newer refresh tokens were issued"),
        "{evidence}"
    );
    // The issue times are the evidence: the first token's and the newer ones'.
    assert!(evidence.contains("issued"), "{evidence}");
    let logged = fleet.replicas[2]
        .proxy
        .wait_for_event(|e| e["event"] == "invalid_grant");
    assert_eq!(logged["cause"], "sf.refresh.approval_limit_evicted");
}

#[tokio::test]
async fn every_replica_shows_the_fleet_s_token_families_not_only_the_tokens_it_holds() {
    let fleet = Fleet::start(3, &[]);
    for _ in 0..5 {
        fleet.login(0).await;
    }
    fleet.login(1).await;
    // Replica 2 saw none of these exchanges and holds none of the tokens; replica 0 holds
    // five, replica 1 one. (Retried only for a commit that came late on a loaded machine.)
    for at in 0..3 {
        let fleet = &fleet;
        let family = eventually(
            Duration::from_secs(10),
            &format!("replica {at} to show the whole family"),
            || async move {
                let (status, body) = fleet.admin(at, "/api/families");
                let families: Value =
                    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
                match families.as_array().map(Vec::as_slice) {
                    Some([family])
                        if status == 200
                            && family["tokens"].as_array().map(Vec::len) == Some(6) =>
                    {
                        Ok(family.clone())
                    }
                    _ => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
        assert_eq!(family["live_approvals"], 5, "replica {at}: {family}");
        assert_eq!(
            family["predicted_evictions"].as_array().unwrap().len(),
            1,
            "replica {at}: {family}"
        );
    }
    let (status, page) = fleet.admin(2, "/");
    assert_eq!(status, 200);
    assert!(page.contains("Token families"), "{page}");
    assert!(page.contains("family-table"), "{page}");
    assert!(!page.contains("No refresh tokens known yet"), "{page}");
}

#[tokio::test]
async fn a_rotation_through_one_replica_is_replayed_to_its_twin_on_another_and_blocked_on_a_third_after_the_window()
 {
    let fleet = Fleet::start(3, &["--replay-window", "2"]);
    let (first, second, access) = fleet.rotated_once().await;

    // A twin within the window, through another replica: the same answer.
    let twin = fleet.refresh(1, &first).await;
    assert_eq!(twin.status, 200, "{}", twin.body);
    assert_eq!(twin.body["refresh_token"], second.as_str());
    assert_eq!(fleet.upstream_refreshes().await, 1);

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let stale = fleet.refresh(2, &first).await;
    assert_eq!(stale.status, 400, "{}", stale.body);
    assert_eq!(
        header(&stale, "grantdoctor-blocked"),
        "rotated-refresh-token"
    );
    assert_eq!(stale.cause(), "sf.refresh.rotated_token_reused");
    // Never forwarded: the family is alive, and the newest token refreshes.
    assert_eq!(fleet.upstream_refreshes().await, 1);
    let next = fleet.refresh(1, &second).await;
    assert_eq!(next.status, 200, "{}", next.body);

    // Nothing usable in the database, nor in any log.
    let dump = fleet.pg.dump();
    assert!(
        dump.contains("grantdoctor_records"),
        "the dump holds the tables"
    );
    for secret in [&first, &second, &access, &WEB_SECRET.to_owned()] {
        assert!(
            !dump.contains(secret.as_str()),
            "the database holds a secret"
        );
        assert!(
            !fleet.logs().contains(secret.as_str()),
            "a log holds a secret"
        );
    }
    assert!(!fleet.logs().contains(postgres::PASSWORD));
}

#[tokio::test]
async fn five_hundred_identical_refreshes_over_three_replicas_make_one_upstream_refresh() {
    // Five hundred clients connecting through three debug builds on two cores take longer
    // than the default window to all arrive; every one of them is a twin here.
    let fleet = Fleet::start(3, &["--replay-window", "60"]);
    fleet.rotate().await;
    let first = fleet.unseen_token().await;
    let fleet = Arc::new(fleet);
    let new_tokens = storm(&fleet, 500, &first).await;
    assert_eq!(new_tokens.len(), 1, "every caller got the same new token");
    assert_eq!(fleet.upstream_refreshes().await, 1);
    let newest = new_tokens.into_iter().next().unwrap();
    let next = fleet.refresh(1, &newest).await;
    assert_eq!(next.status, 200, "the family is intact: {}", next.body);
}

#[tokio::test]
async fn identical_failing_refreshes_over_three_replicas_make_one_upstream_refresh_and_share_its_diagnosis()
 {
    let fleet = Fleet::start(3, &[]);
    let token = fleet.login(0).await;
    let mut settings = fleet.emu.control("GET", "settings", Value::Null).await;
    settings["refresh_latency_ms"] = json!(2500);
    fleet.emu.control("PUT", "settings", settings).await;
    let fleet = Arc::new(fleet);
    // The grant is revoked while the first refresh is upstream, so that refresh fails when
    // it ends, with every other caller waiting on it: a failure is published to other
    // replicas only for followers that waited.
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let path = format!("users/{ALICE}/revoke");
        fleet.emu.control("POST", &path, json!({})).await;
    };
    let (answers, ()) = tokio::join!(at_once(&fleet, 30, &token), revoke);
    let causes: std::collections::HashSet<String> = answers
        .iter()
        .map(|answer| {
            assert_eq!(answer.status, 400, "{}", answer.body);
            assert_eq!(answer.body["error"], "invalid_grant", "{}", answer.body);
            answer.cause().to_owned()
        })
        .collect();
    assert_eq!(causes.len(), 1, "one diagnosis for all: {causes:?}");
    assert_eq!(fleet.upstream_refreshes().await, 1);
    // Every caller but the leader got a shared answer, in its replica or across replicas.
    let coalesced: f64 = (0..3)
        .flat_map(|at| {
            let metrics = fleet.admin(at, "/metrics").1;
            metrics
                .lines()
                .filter(|l| l.starts_with("grantdoctor_coalesced_refreshes_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(coalesced, 29.0);
}

#[tokio::test]
async fn concurrent_recoveries_over_three_replicas_take_turns_on_one_fleet_lease() {
    let (fleet, tokens, _config) = recovering_fleet().await;
    let callers = 30;
    let mut recovered = std::collections::HashSet::new();
    for answer in at_once(&fleet, callers, &tokens[0]).await {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(header(&answer, "grantdoctor-recovered"), "jwt-bearer");
        assert!(answer.body["access_token"].is_string(), "{}", answer.body);
        recovered.insert(answer.body["access_token"].as_str().unwrap().to_owned());
    }
    let jwt = fleet.upstream(JWT_GRANT).await;
    assert!(jwt.iter().all(|r| r["username"] == ALICE), "{jwt:?}");
    // The recovered token stays in the memory of the replica that got it (the database
    // never holds a usable token), so each replica runs at most one exchange of its own.
    assert!(
        (1..=fleet.replicas.len()).contains(&jwt.len()),
        "{} JWT bearer exchanges upstream",
        jwt.len()
    );
    let fleet_ref = &fleet;
    let exchanged = eventually(
        Duration::from_secs(10),
        "a recovered line for every caller",
        || async move {
            let hows: Vec<Vec<String>> = fleet_ref.replicas.iter().map(recoveries).collect();
            match hows.iter().map(Vec::len).sum::<usize>() {
                n if n == callers => Ok(hows),
                n => Err(format!("{n} of {callers}")),
            }
        },
    )
    .await
    .iter()
    .map(|hows| hows.iter().filter(|how| *how == "exchanged").count())
    .collect::<Vec<_>>();
    assert!(exchanged.iter().all(|&n| n <= 1), "{exchanged:?}");
    assert_eq!(exchanged.iter().sum::<usize>(), jwt.len());
    // One lease row for (host, app, user), taken once per exchange: each replica waited
    // for the one before it to land.
    let leases = fleet
        .pg
        .psql("SELECT count(*), max(generation) FROM grantdoctor_flights");
    assert_eq!(leases.trim(), format!("1|{}", jwt.len()));
    // The recovered access tokens are live: no table holds one, nor a refresh token, a code
    // or the client secret the scenario used.
    let dump = fleet.pg.dump();
    assert!(
        dump.contains("grantdoctor_flights"),
        "the dump holds the tables"
    );
    for token in &recovered {
        assert!(
            !dump.contains(token.as_str()),
            "the database holds a recovered access token"
        );
    }
    let codes = fleet.codes.lock().unwrap().clone();
    assert_eq!(codes.len(), tokens.len());
    for secret in tokens.iter().chain(&codes).chain([&WEB_SECRET.to_owned()]) {
        assert!(
            !dump.contains(secret.as_str()),
            "the database holds a secret"
        );
    }
}

#[tokio::test]
async fn a_follower_completes_the_refresh_when_the_leader_replica_is_killed_mid_flight() {
    let mut fleet = Fleet::start(2, &["--response-timeout", "4"]);
    let mut settings = fleet.emu.control("GET", "settings", Value::Null).await;
    settings["refresh_latency_ms"] = json!(2500);
    fleet.emu.control("PUT", "settings", settings).await;
    let token = fleet.login(0).await;
    let fleet_ref = &fleet;
    let leader = async {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", WEB),
            ("refresh_token", token.as_str()),
        ];
        let cut = tokio::time::timeout(Duration::from_secs(10), fleet_ref.try_token(0, &form));
        assert!(
            !matches!(cut.await, Ok(Ok(_))),
            "the killed leader cannot have answered"
        );
    };
    // The leader's refresh is upstream when the follower arrives and the leader dies.
    let follower = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let follow = fleet_ref.refresh(1, &token);
        tokio::pin!(follow);
        let kill = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let pid = fleet_ref.replicas[0].proxy.pid();
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        };
        let (answer, ()) = tokio::join!(&mut follow, kill);
        (answer, started.elapsed())
    };
    let ((), (answer, took)) = tokio::join!(leader, follower);
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The lease is the response timeout (4 s) plus 2 s; then the follower's own refresh.
    assert!(
        took < Duration::from_secs(4 + 2 + 5),
        "the follower waited {took:?}"
    );
    // It waited for the dead leader's lease rather than racing it upstream.
    assert!(
        took > Duration::from_secs(3),
        "the follower went at once: {took:?}"
    );
    let log = fleet.replicas[1].proxy.raw_log();
    assert!(!log.contains(&token));
    fleet.replicas.remove(0);
}

#[tokio::test]
async fn with_the_database_down_traffic_flows_readiness_says_degraded_and_it_heals() {
    let fleet = Fleet::start(2, &[]);
    let before = fleet.login(0).await;
    fleet.pg.stop_server();

    // Traffic flows on what the replica holds.
    let token = fleet.login(0).await;
    let refreshed = fleet.refresh(0, &token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let again = fleet.refresh(1, &before).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let (status, ready) = fleet.admin(0, "/readyz");
    assert_eq!(
        status, 200,
        "a database outage does not take the replica out"
    );
    assert!(ready.starts_with("degraded: store:"), "{ready}");
    let (_, metrics) = fleet.admin(0, "/metrics");
    let errors: u64 = ["read", "write", "lease", "seal"]
        .iter()
        .map(|op| {
            counter(
                &metrics,
                &format!("grantdoctor_store_errors_total{{op=\"{op}\"}} "),
            )
        })
        .sum();
    assert!(errors >= 1, "{metrics}");
    // A lease take that never reached the database took nothing: nothing is left to free,
    // so nothing is retried against it while it is down.
    let lease_errors =
        |metrics: &str| counter(metrics, "grantdoctor_store_errors_total{op=\"lease\"} ");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, later) = fleet.admin(0, "/metrics");
    assert_eq!(lease_errors(&later), lease_errors(&metrics), "{later}");
    let outages = fleet.replicas[0]
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["event"] == "store_unavailable")
        .count();
    assert_eq!(outages, 1, "one log line per outage, not per request");
    assert!(!fleet.logs().contains(postgres::PASSWORD));

    fleet.pg.start_server();
    let (fleet_ref, token_ref) = (&fleet, token.as_str());
    eventually(
        Duration::from_secs(20),
        "the replica to reconnect to the database",
        || async move {
            // An exchange makes the replica use the store again.
            let _ = fleet_ref.refresh(0, token_ref).await;
            readyz_ok(fleet_ref, 0)
        },
    )
    .await;
    fleet.replicas[0]
        .proxy
        .wait_for_event(|e| e["event"] == "store_recovered");

    // Shared coalescing works again: identical refreshes on both replicas, one upstream.
    fleet.rotate().await;
    let fresh = fleet.login(1).await;
    let upstream_before = fleet.upstream_refreshes().await;
    let fleet = Arc::new(fleet);
    let tokens = storm(&fleet, 40, &fresh).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(fleet.upstream_refreshes().await, upstream_before + 1);
}

#[test]
fn each_replica_holds_seven_connections_named_for_pg_stat_activity() {
    let fleet = Fleet::start(2, &[]);
    let seen = fleet.pg.psql(
        "SELECT string_agg(split_part(application_name, ' ', 3), ','
                           ORDER BY split_part(application_name, ' ', 3))
         FROM pg_stat_activity WHERE application_name LIKE 'grantdoctor %'
         GROUP BY split_part(application_name, ' ', 2)",
    );
    let per_replica: Vec<&str> = seen.lines().collect();
    assert_eq!(per_replica.len(), 2, "{seen}");
    for roles in per_replica {
        assert_eq!(
            roles,
            "coordination-0,coordination-1,coordination-2,coordination-3,prune,view,writer"
        );
    }
}

#[test]
fn two_replicas_starting_at_once_on_an_empty_database_both_come_up_and_one_migrates() {
    let pg = Postgres::start();
    let emu = EmulatorProcess::start();
    let args = replica_args(&emu, &pg, &[]);
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| replica(&args));
        let two = s.spawn(|| replica(&args));
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_eq!(
        pg.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM grantdoctor_schema")
            .trim(),
        "1,2"
    );
    let migrated: Vec<usize> = [&a, &b]
        .iter()
        .map(|r| {
            r.proxy
                .events()
                .iter()
                .filter(|e| e["event"] == "store_migrated")
                .count()
        })
        .collect();
    assert!(
        migrated == [2, 0] || migrated == [0, 2],
        "exactly one replica applied both migrations: {migrated:?}"
    );
    for r in [&a, &b] {
        assert_eq!(
            common::raw::admin_get(r.proxy.admin.unwrap(), "/readyz")
                .unwrap()
                .1,
            "ok\n"
        );
    }
}

#[test]
fn a_schema_newer_than_the_binary_is_refused_at_start_without_showing_the_password() {
    let pg = Postgres::start();
    let emu = EmulatorProcess::start();
    let args = replica_args(&emu, &pg, &[]);
    drop(replica(&args));
    pg.psql("INSERT INTO grantdoctor_schema (version) VALUES (999)");
    let dir = tempfile::tempdir().unwrap();
    let out = refused_start(dir.path(), &pg.url());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("version 999, newer than this build knows"),
        "{text}"
    );
    assert!(
        text.contains("postgres://grantdoctor:****@127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains(postgres::PASSWORD), "{text}");
}

#[test]
fn a_replica_with_another_fingerprint_key_is_refused_and_the_database_never_holds_the_key() {
    let pg = Postgres::start();
    let emu = EmulatorProcess::start();
    let args = replica_args(&emu, &pg, &[]);
    drop(replica(&args));
    let dump = pg.dump();
    assert!(
        !dump.contains("0707070707070707"),
        "the key is not in the database"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/fingerprint.key"), [9u8; 32]).unwrap();
    let out = refused_start(dir.path(), &pg.url());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("give every replica the same key"), "{text}");
}

#[test]
fn over_tls_the_database_certificate_is_verified_against_store_ca() {
    let pg = Postgres::start_tls();
    let emu = EmulatorProcess::start();
    let url = |mode: &str| {
        format!(
            "postgres://{}:{}@localhost:{}/postgres?sslmode={mode}",
            postgres::USER,
            postgres::PASSWORD,
            pg.port
        )
    };
    // Each of the three TLS modes verifies the server's certificate and name (stricter than
    // libpq's `require`, which checks neither), and every connection of the replica is
    // encrypted.
    for mode in ["require", "verify-ca", "verify-full"] {
        let mut args = replica_args(
            &emu,
            &pg,
            &["--store-ca", &pg.ca_pem().display().to_string()],
        );
        args[1] = url(mode);
        let trusted = replica(&args);
        let (_, ready) = common::raw::admin_get(trusted.proxy.admin.unwrap(), "/readyz").unwrap();
        assert_eq!(ready, "ok\n", "{mode}");
        assert!(
            trusted
                .proxy
                .wait_for_event(|e| e["event"] == "store_opened")["schema"]
                == 2
        );
        // The last mode's replica is gone, though its server processes may take a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let encrypted = loop {
            let counted = pg.psql(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.application_name LIKE 'grantdoctor %'",
            );
            if counted.trim() == "7|7" || Instant::now() > deadline {
                break counted;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            encrypted.trim(),
            "7|7",
            "{mode}: the replica's connections use TLS"
        );
    }

    // Without the CA, the server's certificate is not trusted: refused at start, at once
    // (waiting cannot make it trusted), naming the certificate; `require` included.
    for mode in ["require", "verify-full"] {
        let dir = tempfile::tempdir().unwrap();
        let out = refused_start(dir.path(), &url(mode));
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("opening the shared store"), "{mode}: {text}");
        assert!(text.contains("certificate"), "{mode}: {text}");
        assert!(!text.contains(postgres::PASSWORD), "{mode}: {text}");
    }
}

#[test]
fn check_config_masks_the_store_password() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grantdoctor"))
        .args([
            "check-config",
            "--store",
            "postgres://gd:hunter2-store@db.internal:5432/ledger",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("store = \"postgres://gd:****@db.internal:5432/ledger\""),
        "{text}"
    );
    assert!(!text.contains("hunter2-store"));
}

#[tokio::test]
async fn a_user_s_token_requests_through_three_replicas_add_up_to_the_login_rate_warning() {
    let fleet = Fleet::start(3, &[]);
    let form = [
        ("grant_type", "password"),
        ("client_id", WEB),
        ("client_secret", WEB_SECRET),
        ("username", "bob@acme.com"),
        ("password", "Pa55wordTOKENBOB"),
    ];
    let warned = |fleet: &Fleet| -> Vec<String> {
        fleet
            .replicas
            .iter()
            .flat_map(|r| r.proxy.events())
            .filter(|e| e["event"] == "warning" && e["id"] == "warn.login_rate")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    // 80 % of Salesforce's 3,600 an hour for one user, a third through each replica: no replica alone comes near it.
    let burst = |at: usize| {
        let (fleet, form) = (&fleet, &form);
        async move {
            for _ in 0..960 {
                let answer = fleet.token(at, form).await;
                assert_eq!(answer.status, 200, "{}", answer.body);
            }
        }
    };
    tokio::join!(burst(0), burst(1), burst(2));
    assert_eq!(
        warned(&fleet),
        Vec::<String>::new(),
        "2,880 is not past 80 %"
    );
    // One more at a time, round the replicas: the one that counts past 2,880 with the
    // others' shares warns.
    let mut sent = 2_880;
    let message = eventually(Duration::from_secs(10), "a login rate warning", || {
        sent += 1;
        let at = sent % 3;
        let fleet = &fleet;
        async move {
            let answer = fleet.token(at, &form).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            warned(fleet).pop().ok_or_else(|| "none yet".to_owned())
        }
    })
    .await;
    let counted: usize = message
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count leads the message: {message}"));
    assert!(
        (2_881..=sent).contains(&counted),
        "counted {counted} of {sent}: {message}"
    );
    assert!(message.contains("token requests for this user in the last hour"));
    let dump = fleet.pg.dump();
    for secret in ["Pa55wordTOKENBOB", WEB_SECRET] {
        assert!(!fleet.logs().contains(secret), "a log holds a secret");
        assert!(!dump.contains(secret), "the database holds a secret");
    }
}

#[tokio::test]
async fn a_code_redeemed_through_one_replica_and_replayed_through_another_is_diagnosed_as_reused() {
    let fleet = Fleet::start(2, &[]);
    let code = fleet
        .emu
        .authorize(WEB, ALICE, "api refresh_token", None)
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", WEB),
        ("client_secret", WEB_SECRET),
        ("code", code.as_str()),
        ("redirect_uri", "https://app.example.com/callback"),
    ];
    let first = fleet.token(0, &form).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // The issue of a refresh token is committed before its answer: the code's record with it.
    let again = fleet.token(1, &form).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(again.cause(), "sf.code.reused", "{}", again.body);
    assert!(
        again
            .evidence("sf.code.reused")
            .contains("already exchanged successfully at"),
        "{}",
        again.body
    );
    let dump = fleet.pg.dump();
    assert!(dump.contains("grantdoctor_records"));
    assert!(!dump.contains(&code), "the database holds the code");
    assert!(!fleet.logs().contains(&code), "a log holds the code");
}

#[tokio::test]
async fn password_failures_at_once_through_two_replicas_add_up_on_a_third_a_success_clears_them_and_no_table_holds_the_password()
 {
    let fleet = Fleet::start(3, &[]);
    let password = "wrong-Pa55-Zk31q";
    let attempt = |at: usize, password: &'static str| {
        let fleet = &fleet;
        async move {
            let form = [
                ("grant_type", "password"),
                ("client_id", WEB),
                ("client_secret", WEB_SECRET),
                ("username", "bob@acme.com"),
                ("password", password),
            ];
            fleet.token(at, &form).await
        }
    };
    // The stored count: the sum of every replica's share (`count` or `count@round`) in the
    // newest round.
    let stored = || {
        fleet
            .pg
            .psql(
                "WITH s AS (
                     SELECT split_part(value, '@', 1)::int AS n,
                            coalesce(nullif(split_part(value, '@', 2), ''), '0')::int8 AS r
                     FROM grantdoctor_records
                     WHERE kind = 'password_failures' AND value IS NOT NULL)
                 SELECT coalesce(sum(n) FILTER (WHERE r = (SELECT max(r) FROM s)), 0) FROM s",
            )
            .trim()
            .to_owned()
    };
    // Three failures at once, two through A and one through B: neither replica has seen the
    // other's when it counts, and neither count overwrites the other's.
    let answers = tokio::join!(
        attempt(0, password),
        attempt(0, password),
        attempt(1, password)
    );
    for answer in [&answers.0, &answers.1, &answers.2] {
        assert_eq!(
            answer.cause(),
            "sf.password.bad_credentials",
            "{}",
            answer.body
        );
    }
    eventually(
        Duration::from_secs(10),
        "three failures in the store",
        || async {
            match stored().as_str() {
                "3" => Ok(()),
                other => Err(other.to_owned()),
            }
        },
    )
    .await;
    let answer = attempt(2, password).await;
    assert!(
        answer
            .evidence("sf.password.lockout_risk")
            .contains("4 consecutive failures"),
        "{}",
        answer.body
    );

    // The password that works, through B, clears every replica's share, C's too though B
    // may not have read it yet: the next failure, through A, is the first again.
    let answer = attempt(1, "Pa55wordTOKENBOB").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    eventually(
        Duration::from_secs(10),
        "the failures cleared in the store",
        || async {
            match stored().as_str() {
                "0" => Ok(()),
                other => Err(other.to_owned()),
            }
        },
    )
    .await;
    let answer = attempt(0, password).await;
    assert!(
        answer
            .evidence("sf.password.bad_credentials")
            .contains("1 consecutive failure(s)"),
        "{}",
        answer.body
    );

    let dump = fleet.pg.dump();
    assert!(
        dump.contains("grantdoctor_records"),
        "the dump holds the tables"
    );
    for secret in [password, WEB_SECRET] {
        assert!(!dump.contains(secret), "the database holds a secret");
        assert!(!fleet.logs().contains(secret), "a log holds a secret");
    }
}
