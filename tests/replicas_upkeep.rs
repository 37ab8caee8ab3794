//! The shared store's upkeep, with real replicas on one real PostgreSQL in front of the
//! emulator: two replicas pruning the records at once take turns (one deletes, each row
//! once, down to the bound, oldest first); a sealed replay is swept from the store once its
//! window ends, and one a database crash forgot leaves its twin refused, never forwarded;
//! identical refreshes still go upstream once while every replica's lease
//! connection is cut and kept from coming back, and it comes back after; a connection that
//! stays open but stops answering is dropped and the others coordinate, and a follower whose
//! look goes unanswered asks again rather than send the token itself; and after
//! concurrent recoveries no table holds the store's password, the signing key or a signed
//! JWT assertion.

mod common;
#[allow(dead_code)]
#[path = "replicas/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::emulator::EmulatorProcess;
use common::postgres::{self, Postgres};
use support::{
    ALICE, Fleet, JWT_GRANT, WEB, at_once, eventually, header, readyz_ok, recovering_fleet,
    replica, replica_args, storm,
};
use tokio_postgres::NoTls;

/// How `bytes` look in a bytea column of a dump (lower-case hex).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `sig` (`-STOP`, `-CONT`) to each of these server processes. Stopped, a server
/// process keeps its socket open (its kernel acknowledges what is sent) and answers
/// nothing: a backend hung, or a peer gone without a word.
fn signal<'a>(sig: &str, pids: impl IntoIterator<Item = &'a String>) {
    for pid in pids {
        let status = std::process::Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    }
}

/// The server processes of every replica's coordination connections but the lease one.
fn other_coordination_connections(pg: &Postgres) -> Vec<String> {
    pg.psql(
        "SELECT pid FROM pg_stat_activity
         WHERE application_name LIKE 'grantdoctor % coordination-%'
           AND application_name NOT LIKE '% coordination-1'",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Waits until each replica's `coordination-1` is a new connection: a server process none of
/// `old`'s.
async fn lease_connections_renewed(pg: &Postgres, old: &BTreeMap<String, String>) {
    eventually(
        Duration::from_secs(20),
        "each replica's coordination-1 to be a new connection",
        || async move {
            let now = lease_connections(pg);
            let renewed = now.keys().eq(old.keys())
                && now.values().all(|pid| !old.values().any(|o| o == pid));
            renewed
                .then_some(())
                .ok_or(format!("{now:?} (was {old:?})"))
        },
    )
    .await;
}

/// Each replica's `coordination-1` connection: its server process, by replica name.
fn lease_connections(pg: &Postgres) -> BTreeMap<String, String> {
    pg.psql(
        "SELECT split_part(application_name, ' ', 2), pid FROM pg_stat_activity
         WHERE application_name LIKE 'grantdoctor % coordination-1'",
    )
    .lines()
    .map(|l| {
        let (replica, pid) = l.split_once('|').unwrap();
        (replica.to_owned(), pid.to_owned())
    })
    .collect()
}

#[tokio::test]
async fn two_replicas_pruning_one_store_at_once_take_turns_and_leave_the_newest_rows_to_the_bound()
{
    const ROWS: u64 = 25_000;
    const BOUND: u64 = 4_000;
    let pg = Postgres::start();
    let emu = EmulatorProcess::start();
    // A first replica creates the schema, and is gone.
    drop(replica(&replica_args(&emu, &pg, &[])));
    // Records a fleet long gone left, key n a second older than key n - 1 (all older than
    // the hour of codes a starting replica reads back). More than two prune chunks of them.
    pg.psql(&format!(
        "INSERT INTO grantdoctor_records (kind, key, value, at, seq, writer)
         SELECT 'code', 'fp_' || lpad(n::text, 16, '0'), '1',
                grantdoctor_now_ms() - 7200000 - n * 1000,
                nextval('grantdoctor_records_seq'), 'gone'
         FROM generate_series(0, {ROWS} - 1) AS n"
    ));
    // Who deleted which row; and every delete waits at a gate the test holds, so the first
    // pruner is still at it when the second comes.
    pg.psql(
        "CREATE TABLE pruned (app text, key text);
         CREATE FUNCTION log_pruned() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO pruned VALUES (current_setting('application_name'), OLD.key);
         RETURN OLD; END $$;
         CREATE TRIGGER logged AFTER DELETE ON grantdoctor_records
         FOR EACH ROW EXECUTE FUNCTION log_pruned();
         CREATE FUNCTION gated() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$;
         CREATE TRIGGER gate BEFORE DELETE ON grantdoctor_records
         FOR EACH STATEMENT EXECUTE FUNCTION gated();",
    );
    // Every statement the server runs is logged with its session's name: a pruner that
    // found another at it leaves no other trace.
    pg.psql("ALTER SYSTEM SET log_statement = 'all'");
    pg.psql("ALTER SYSTEM SET log_line_prefix = '%m %a: '");
    pg.psql("SELECT pg_reload_conf()");
    let (gate, connection) = tokio_postgres::connect(&pg.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    gate.batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    let pg_ref = &pg;
    eventually(
        Duration::from_secs(10),
        "statements to be logged",
        || async move {
            let logged = pg_ref.psql("SHOW log_statement");
            (logged.trim() == "all").then_some(()).ok_or(logged)
        },
    )
    .await;

    let args = replica_args(&emu, &pg, &["--ledger-max-rows", &BOUND.to_string()]);
    let starting: Vec<_> = (0..2)
        .map(|_| {
            let args = args.clone();
            tokio::task::spawn_blocking(move || replica(&args))
        })
        .collect();
    let deleting = "SELECT application_name FROM pg_stat_activity
                    WHERE query LIKE 'DELETE FROM grantdoctor_records%'";
    let tried = || {
        let log = std::fs::read_to_string(pg_ref.dir().join("server.log")).unwrap();
        log.lines()
            .filter(|l| l.contains("pg_try_advisory_lock"))
            .filter_map(|l| l.split("grantdoctor ").nth(1)?.split(' ').next())
            .map(str::to_owned)
            .collect::<BTreeSet<String>>()
    };
    eventually(
        Duration::from_secs(20),
        "both new replicas to have tried the prune lock",
        || async move {
            match tried() {
                replicas if replicas.len() == 2 => Ok(()),
                replicas => Err(format!("{replicas:?}")),
            }
        },
    )
    .await;
    // One of them holds the lock and waits at the gate inside its first delete; the other
    // left: the delete is not waiting for a turn.
    let pruner = eventually(
        Duration::from_secs(10),
        "a pruner waiting at the gate",
        || async move {
            let waiting = pg_ref.psql(&format!("{deleting} AND wait_event_type = 'Lock'"));
            match waiting.lines().collect::<Vec<_>>()[..] {
                [one] => Ok(one.to_owned()),
                _ => Err(waiting),
            }
        },
    )
    .await;
    // On a connection of its own, which no exchange waits behind.
    assert!(pruner.ends_with(" prune"), "{pruner}");
    let name = pruner.split(' ').nth(1).unwrap();
    assert!(tried().contains(name), "{pruner} vs {:?}", tried());
    assert_eq!(pg.psql(deleting).trim(), pruner, "one replica deletes");
    gate.batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();

    let mut replicas = Vec::new();
    for start in starting {
        replicas.push(start.await.unwrap());
    }
    let fleet = Fleet {
        emu,
        pg,
        replicas,
        codes: Default::default(),
    };
    let fleet_ref = &fleet;
    let pruned_by = || {
        fleet_ref
            .replicas
            .iter()
            .map(|r| {
                r.proxy
                    .events()
                    .iter()
                    .filter(|e| e["event"] == "store_pruned")
                    .map(|e| e["rows"].as_u64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let logged = eventually(
        Duration::from_secs(20),
        "the pruned rows to be logged",
        || async move {
            let logged = pruned_by();
            match logged.iter().flatten().sum::<u64>() {
                n if n == ROWS - BOUND => Ok(logged),
                _ => Err(format!("{logged:?}")),
            }
        },
    )
    .await;
    assert!(
        logged == [vec![ROWS - BOUND], vec![]] || logged == [vec![], vec![ROWS - BOUND]],
        "one replica pruned, in one go: {logged:?}"
    );
    // The newest rows are kept, to the bound; each older one was deleted once, by the one
    // connection that held the lock.
    assert_eq!(
        fleet
            .pg
            .psql("SELECT count(*), min(key), max(key) FROM grantdoctor_records")
            .trim(),
        format!("{BOUND}|fp_0000000000000000|fp_{:016}", BOUND - 1)
    );
    assert_eq!(
        fleet
            .pg
            .psql(
                "SELECT count(*), count(DISTINCT key), min(key), max(key),
                        string_agg(DISTINCT app, ',')
                 FROM pruned"
            )
            .trim(),
        format!(
            "{}|{}|fp_{BOUND:016}|fp_{:016}|{pruner}",
            ROWS - BOUND,
            ROWS - BOUND,
            ROWS - 1
        )
    );
    for at in 0..2 {
        eventually(
            Duration::from_secs(20),
            &format!("replica {at} to be ready"),
            || async move { readyz_ok(fleet_ref, at) },
        )
        .await;
    }
}

#[tokio::test]
async fn a_sealed_replay_is_deleted_from_the_store_when_its_window_ends() {
    let fleet = Fleet::start(2, &["--replay-window", "4"]);
    let (first, second, _) = fleet.rotated_once().await;
    // Filed with the rotation's record, which the answer waited for; kept for the window,
    // not longer.
    let kept = fleet.pg.psql(
        "SELECT count(*), bool_and(until - grantdoctor_now_ms() <= 4000) FROM grantdoctor_sealed",
    );
    assert_eq!(kept.trim(), "1|t", "one sealed replay, for the window");
    // It is what a twin through the other replica is answered from.
    let twin = fleet.refresh(1, &first).await;
    assert_eq!(twin.status, 200, "{}", twin.body);
    assert_eq!(twin.body["refresh_token"], second.as_str());

    let fleet_ref = &fleet;
    eventually(
        Duration::from_secs(20),
        "a sweep to delete the sealed replay",
        || async move {
            match fleet_ref
                .pg
                .psql("SELECT count(*) FROM grantdoctor_sealed")
                .trim()
            {
                "0" => Ok(()),
                left => Err(format!("{left} rows")),
            }
        },
    )
    .await;
    // With it gone, a twin is refused, never forwarded; the family lives on.
    let late = fleet.refresh(1, &first).await;
    assert_eq!(late.status, 400, "{}", late.body);
    assert_eq!(
        header(&late, "grantdoctor-blocked"),
        "rotated-refresh-token"
    );
    assert_eq!(fleet.upstream_refreshes().await, 1);
    let next = fleet.refresh(1, &second).await;
    assert_eq!(next.status, 200, "{}", next.body);
}

#[tokio::test]
async fn a_database_crash_forgets_sealed_replays_and_a_twin_inside_the_window_is_then_refused_never_forwarded()
 {
    let fleet = Fleet::start(2, &["--replay-window", "60"]);
    let (first, second, _) = fleet.rotated_once().await;
    // The other replica takes the rotation in before the crash: it reads the change feed at
    // least once a second, before it judges an exchange.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fleet.login(1).await;
    let kept = fleet.pg.psql("SELECT count(*) FROM grantdoctor_sealed");
    assert_eq!(kept.trim(), "1", "the rotation's replay is filed");
    // An immediate stop is a crash: recovery empties the unlogged tables (leases and sealed
    // replays) and keeps the logged ones (the records).
    fleet.pg.stop_server();
    fleet.pg.start_server();
    let left = fleet.pg.psql(
        "SELECT (SELECT count(*) FROM grantdoctor_sealed) || '|' ||
                (SELECT count(*) FROM grantdoctor_flights) || '|' ||
                (SELECT count(*) > 0 FROM grantdoctor_records)",
    );
    assert_eq!(left.trim(), "0|0|true", "what the crash forgot");
    let fleet_ref = &fleet;
    eventually(
        Duration::from_secs(20),
        "the replica to reconnect to the database",
        || async move {
            fleet_ref.login(1).await;
            readyz_ok(fleet_ref, 1)
        },
    )
    .await;
    // Inside the window, the twin's answer is gone: it is refused, never forwarded (a
    // forwarded rotated token would revoke the family).
    let twin = fleet.refresh(1, &first).await;
    assert_eq!(twin.status, 400, "{}", twin.body);
    assert_eq!(
        header(&twin, "grantdoctor-blocked"),
        "rotated-refresh-token"
    );
    assert_eq!(twin.cause(), "sf.refresh.rotated_token_reused");
    assert_eq!(fleet.upstream_refreshes().await, 1);
    let next = fleet.refresh(0, &second).await;
    assert_eq!(next.status, 200, "the family lives on: {}", next.body);
}

#[tokio::test]
async fn with_every_replica_s_lease_connection_cut_identical_refreshes_still_make_one_upstream_refresh()
 {
    let fleet = Fleet::start(3, &["--replay-window", "60"]);
    fleet.rotate().await;
    let first = fleet.unseen_token().await;
    let before = lease_connections(&fleet.pg);
    assert_eq!(before.len(), 3, "{before:?}");
    // A session opened beforehand (on another database: one cannot close its own): while
    // the store's database lets no new one in, the connections cut stay down, however
    // quickly their replicas try again.
    let elsewhere = fleet.pg.url().replace("/postgres", "/template1");
    let (admin, connection) = tokio_postgres::connect(&elsewhere, NoTls).await.unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS false")
        .await
        .unwrap();
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name LIKE '% coordination-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 3);
    assert!(cut.iter().all(|row| row.get::<_, bool>(0)));
    for r in &fleet.replicas {
        r.proxy
            .wait_for_event(|e| e["event"] == "store_disconnected");
    }

    let fleet = Arc::new(fleet);
    let new_tokens = storm(&fleet, 100, &first).await;
    let down: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name LIKE '% coordination-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS true")
        .await
        .unwrap();
    assert_eq!(down, 0, "the lease connections were down all along");
    assert_eq!(new_tokens.len(), 1, "every caller got the same new token");
    assert_eq!(fleet.upstream_refreshes().await, 1);

    lease_connections_renewed(&fleet.pg, &before).await;
    let newest = new_tokens.into_iter().next().unwrap();
    let next = fleet.refresh(1, &newest).await;
    assert_eq!(next.status, 200, "the family is intact: {}", next.body);
}

#[tokio::test]
async fn no_table_nor_log_holds_the_store_password_the_signing_key_or_a_jwt_assertion_after_recoveries()
 {
    let (fleet, tokens, _config) = recovering_fleet().await;
    let from = common::jwt::now_secs();
    for answer in at_once(&fleet, 30, &tokens[0]).await {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(header(&answer, "grantdoctor-recovered"), "jwt-bearer");
    }
    let to = common::jwt::now_secs();
    let jwt = fleet.upstream(JWT_GRANT).await;
    assert!(!jwt.is_empty(), "the replicas exchanged assertions");
    assert!(jwt.iter().all(|r| r["status"] == 200), "{jwt:?}");

    // The emulator keeps no assertion, but one is a function of the second it was signed in:
    // RS256 signatures are deterministic, so these are every assertion the replicas can
    // have signed meanwhile.
    let pem = common::jwt::fixture("jwt/app-private.pem");
    let key = grantdoctor::recover::assertion::load_key(&pem).unwrap();
    let audience = "https://login.salesforce.com";
    let mint = |at: i64| {
        grantdoctor::recover::assertion::mint(&key, WEB, ALICE, audience, at as u64).unwrap()
    };
    assert_eq!(mint(from), mint(from), "signing is deterministic");
    let assertions: Vec<String> = (from - 1..=to + 1).map(mint).collect();
    let signatures: Vec<String> = assertions
        .iter()
        .map(|a| a.rsplit('.').next().unwrap().to_owned())
        .collect();
    let pem = std::fs::read_to_string(&pem).unwrap();
    let key_lines: Vec<String> = pem
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .map(str::to_owned)
        .collect();
    assert!(key_lines.len() > 20, "{pem}");

    let dump = fleet.pg.dump();
    assert!(
        dump.contains("grantdoctor_flights"),
        "the dump holds the tables"
    );
    let logs = fleet.logs();
    let secrets = [postgres::PASSWORD.to_owned()]
        .into_iter()
        .chain(key_lines)
        .chain(assertions)
        .chain(signatures);
    for secret in secrets {
        // As text, or as the bytes of a bytea column.
        for shown in [secret.clone(), hex(secret.as_bytes())] {
            assert!(
                !dump.contains(&shown),
                "the database holds a secret: {secret}"
            );
            assert!(!logs.contains(&shown), "a log holds a secret: {secret}");
        }
    }
}

#[tokio::test]
async fn a_replica_drops_a_connection_that_stays_open_but_stops_answering_and_coordinates_on_the_others()
 {
    let fleet = Fleet::start(3, &["--replay-window", "60"]);
    fleet.rotate().await;
    let first = fleet.unseen_token().await;
    let stuck = lease_connections(&fleet.pg);
    assert_eq!(stuck.len(), 3, "{stuck:?}");
    signal("-STOP", stuck.values());
    // One exchange through each replica: its lease batch goes unanswered to the bound, and
    // the replica drops that connection.
    for (at, r) in fleet.replicas.iter().enumerate() {
        let probe = fleet.refresh(at, "5Aep861.never-issued").await;
        assert_eq!(probe.status, 400, "{}", probe.body);
        r.proxy
            .wait_for_event(|e| e["event"] == "store_connection_reset");
    }
    let fleet = Arc::new(fleet);
    let new_tokens = storm(&fleet, 100, &first).await;
    assert_eq!(new_tokens.len(), 1, "every caller got the same new token");
    assert_eq!(
        fleet.upstream_refreshes().await,
        4,
        "the three probes, and one refresh for the hundred callers"
    );
    signal("-CONT", stuck.values());
    // The stopped processes end (their clients left) and each replica's lease connection
    // is a new one.
    lease_connections_renewed(&fleet.pg, &stuck).await;
    let newest = new_tokens.into_iter().next().unwrap();
    let next = fleet.refresh(2, &newest).await;
    assert_eq!(next.status, 200, "the family is intact: {}", next.body);
}

#[tokio::test]
async fn followers_whose_lease_looks_go_unanswered_ask_again_and_never_send_the_token_themselves() {
    let fleet = Fleet::start(3, &["--replay-window", "60"]);
    fleet.rotate().await;
    let first = fleet.unseen_token().await;
    // Every connection a follower looks on but the one leases are taken on.
    let stuck = other_coordination_connections(&fleet.pg);
    assert_eq!(stuck.len(), 9, "{stuck:?}");
    signal("-STOP", &stuck);
    let fleet = Arc::new(fleet);
    let new_tokens = storm(&fleet, 60, &first).await;
    signal("-CONT", &stuck);
    assert_eq!(new_tokens.len(), 1, "every caller got the same new token");
    assert_eq!(
        fleet.upstream_refreshes().await,
        1,
        "one refresh went upstream"
    );
    let newest = new_tokens.into_iter().next().unwrap();
    let next = fleet.refresh(1, &newest).await;
    assert_eq!(next.status, 200, "the family is intact: {}", next.body);
}
