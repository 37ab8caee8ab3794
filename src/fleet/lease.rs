//! Leases on refreshes in flight across replicas, and the sealed answers they leave.
//!
//! The leader of an identical refresh takes the lease row in one short statement (no lock is
//! held across the call to Salesforce); followers poll the row until the leader publishes
//! its sealed answer, or its lease expires and one of them takes over. A lease lasts longer
//! than the leader's upstream call can (`--response-timeout` plus a margin), so a slow
//! leader is never doubled: a follower never sends the token while a live lease exists.
//!
//! Every statement here is typed and unprepared: it goes out with its parameters in one
//! message, one round trip, on the token path.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::db::StoreError;

/// What a replica may do with a refresh another may be leading.
#[derive(Debug)]
pub enum Turn {
    /// This replica leads, under this generation.
    Lead(i64),
    /// Another replica leads; its lease has this many milliseconds left.
    Wait(i64),
    /// The leader's answer, sealed.
    Landed(Vec<u8>),
}

/// Takes the lease of `id` if it is free or expired.
pub async fn take(
    client: &Client,
    id: &[u8],
    holder: &str,
    lease_ms: i64,
) -> Result<Turn, StoreError> {
    let taken = client
        .query_typed(
            "INSERT INTO grantdoctor_flights AS f (id, holder, generation, lease_until)
             VALUES ($1, $2, 1, grantdoctor_now_ms() + $3)
             ON CONFLICT (id) DO UPDATE
                SET holder = $2, generation = f.generation + 1,
                    lease_until = grantdoctor_now_ms() + $3, sealed = NULL, done_until = NULL
                WHERE f.lease_until < grantdoctor_now_ms()
                  AND (f.done_until IS NULL OR f.done_until < grantdoctor_now_ms())
             RETURNING generation",
            &[
                (&id, Type::BYTEA),
                (&holder, Type::TEXT),
                (&lease_ms, Type::INT8),
            ],
        )
        .await?;
    if let Some(row) = taken.into_iter().next() {
        return Ok(Turn::Lead(row.get(0)));
    }
    look(client, id).await
}

/// The state of `id` as a follower sees it.
pub async fn look(client: &Client, id: &[u8]) -> Result<Turn, StoreError> {
    let rows = client
        .query_typed(
            "SELECT lease_until - grantdoctor_now_ms(), sealed,
                    coalesce(done_until, 0) - grantdoctor_now_ms()
             FROM grantdoctor_flights WHERE id = $1",
            &[(&id, Type::BYTEA)],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(Turn::Wait(0));
    };
    let left: i64 = row.get(0);
    let sealed: Option<Vec<u8>> = row.get(1);
    let fresh: i64 = row.get(2);
    Ok(match sealed {
        Some(sealed) if fresh > 0 => Turn::Landed(sealed),
        _ => Turn::Wait(left.max(0)),
    })
}

/// Publishes the leader's sealed answer (kept `keep_ms` for late followers) and ends its
/// lease, or with `None` just ends the lease so that a follower takes over at once. Refused
/// (false) when another replica took the lease over meanwhile.
pub async fn land(
    client: &Client,
    id: &[u8],
    generation: i64,
    sealed: Option<&[u8]>,
    keep_ms: i64,
) -> Result<bool, StoreError> {
    let updated = client
        .execute_typed(
            "UPDATE grantdoctor_flights
             SET sealed = $3, done_until = CASE WHEN $3::bytea IS NULL THEN NULL
                                              ELSE grantdoctor_now_ms() + $4 END,
                 lease_until = 0
             WHERE id = $1 AND generation = $2",
            &[
                (&id, Type::BYTEA),
                (&generation, Type::INT8),
                (&sealed, Type::BYTEA),
                (&keep_ms, Type::INT8),
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// Files a sealed answer under `id` for `keep_ms`.
pub async fn put_sealed(
    client: &Client,
    id: &[u8],
    sealed: &[u8],
    keep_ms: i64,
) -> Result<(), StoreError> {
    client
        .execute_typed(
            "INSERT INTO grantdoctor_sealed (id, sealed, until)
             VALUES ($1, $2, grantdoctor_now_ms() + $3)
             ON CONFLICT (id) DO UPDATE SET sealed = $2, until = grantdoctor_now_ms() + $3",
            &[
                (&id, Type::BYTEA),
                (&sealed, Type::BYTEA),
                (&keep_ms, Type::INT8),
            ],
        )
        .await?;
    Ok(())
}

/// The sealed answer filed under `id`, while it is kept.
pub async fn get_sealed(client: &Client, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(client
        .query_typed(
            "SELECT sealed FROM grantdoctor_sealed WHERE id = $1 AND until > grantdoctor_now_ms()",
            &[(&id, Type::BYTEA)],
        )
        .await?
        .into_iter()
        .next()
        .map(|row| row.get(0)))
}

/// Deletes what outlived its use: sealed answers past their window, flights long finished.
pub async fn sweep(client: &Client) -> Result<u64, StoreError> {
    let sealed = client
        .execute(
            "DELETE FROM grantdoctor_sealed WHERE until < grantdoctor_now_ms()",
            &[],
        )
        .await?;
    let flights = client
        .execute(
            "DELETE FROM grantdoctor_flights
             WHERE lease_until < grantdoctor_now_ms() - 60000
               AND coalesce(done_until, 0) < grantdoctor_now_ms()",
            &[],
        )
        .await?;
    Ok(sealed + flights)
}
