//! The shared database's schema, versioned: migrations apply at start under an advisory
//! lock, so replicas starting together migrate once (the others wait, then find nothing to
//! do), and a binary refuses a schema newer than it knows rather than misreading it.

use tokio_postgres::Client;

use super::db::StoreError;

/// Held while migrating; any constant shared by every replica of every version.
const MIGRATION_LOCK: i64 = 0x6772_616e_7464_6f63; // "grantdoc"

/// Version, and the statements that bring the schema from the one before to it.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
    CREATE SEQUENCE grantdoctor_records_seq;
    -- The ledger's records, as the embedded store keeps them (kind, key, JSON value), with the
    -- sequence number of their last write: replicas read what changed since they last looked.
    -- A deleted record stays as a tombstone (value NULL) until retention removes it.
    CREATE TABLE grantdoctor_records (
        kind text NOT NULL,
        key text NOT NULL,
        value text,
        at bigint NOT NULL,
        seq bigint NOT NULL,
        writer text NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX grantdoctor_records_by_seq ON grantdoctor_records (seq);
    CREATE INDEX grantdoctor_records_by_at ON grantdoctor_records (at);
    -- Refreshes in flight anywhere in the fleet: who leads, until when, under which generation
    -- (a fencing number: a leader whose lease was taken over cannot publish).
    CREATE TABLE grantdoctor_flights (
        id bytea PRIMARY KEY,
        holder text NOT NULL,
        generation bigint NOT NULL,
        lease_until bigint NOT NULL,
        sealed bytea,
        done_until bigint
    );
    -- Answers sealed for twins of a rotating refresh, until the replay window ends.
    CREATE TABLE grantdoctor_sealed (
        id bytea PRIMARY KEY,
        sealed bytea NOT NULL,
        until bigint NOT NULL
    );
    CREATE TABLE grantdoctor_settings (
        name text PRIMARY KEY,
        value bytea NOT NULL
    );
    -- The database's clock, in milliseconds: leases compare times of one clock, whatever the
    -- replicas' clocks say.
    CREATE FUNCTION grantdoctor_now_ms() RETURNS bigint LANGUAGE sql VOLATILE
        AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
    ",
    ),
    (
        2,
        "
    -- Whether a follower waited on the flight: a failure's answer is kept for followers only
    -- then (a twin arriving after it landed may ask Salesforce again: a dead token stays dead).
    ALTER TABLE grantdoctor_flights ADD COLUMN wanted boolean NOT NULL DEFAULT false;
    -- Sealed answers are ciphertext: trying to compress them only costs time.
    ALTER TABLE grantdoctor_flights ALTER COLUMN sealed SET STORAGE EXTERNAL;
    ALTER TABLE grantdoctor_sealed ALTER COLUMN sealed SET STORAGE EXTERNAL;
    -- Leases live seconds and sealed answers a replay window: they are not worth a write
    -- to the server's log. A crash or a failover of the database forgets them (a lease
    -- lost mid-flight lets a follower go upstream; a twin whose replay was lost is refused,
    -- never forwarded); the records stay logged.
    ALTER TABLE grantdoctor_flights SET UNLOGGED;
    ALTER TABLE grantdoctor_sealed SET UNLOGGED;
    ",
    ),
];

/// The newest schema this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Brings the schema to [`latest`]; returns the version it was at.
pub async fn migrate(client: &Client) -> Result<i32, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let outcome = migrate_locked(client).await;
    // Released on every path: a session lock outlives a failed transaction.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let before = outcome?;
    unlocked?;
    Ok(before)
}

async fn migrate_locked(client: &Client) -> Result<i32, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS grantdoctor_schema (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM grantdoctor_schema",
            &[],
        )
        .await?;
    let current: i32 = row.get(0);
    if current > latest() {
        return Err(StoreError::Schema(format!(
            "the database's grantdoctor schema is at version {current}, newer than this build knows ({}): run a grantdoctor at least as new as the one that migrated it",
            latest()
        )));
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let applied = format!(
            "BEGIN; {statements}; INSERT INTO grantdoctor_schema (version) VALUES ({version}); COMMIT;"
        );
        if let Err(e) = client.batch_execute(&applied).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
        tracing::info!(event = "store_migrated", version);
    }
    Ok(current)
}
