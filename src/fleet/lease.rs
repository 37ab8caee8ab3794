//! Leases on refreshes in flight across replicas, and the sealed answers they leave.
//!
//! The leader of an identical refresh takes the lease row in one short statement, shared with
//! the other exchanges asking or landing at the same moment ([`super::batch`], [`run_many`];
//! no lock is held across the call to Salesforce); followers poll the row until the leader
//! publishes its sealed answer, or its lease expires and one of them takes over. A lease lasts longer
//! than the leader's upstream call can (`--response-timeout` plus a margin), so a slow
//! leader is never doubled: a follower never sends the token while a live lease exists.
//!
//! Every statement here is one round trip on the token path, prepared once per connection
//! (their generic plans are index lookups).

use tokio_postgres::types::Type;

use super::db::{Conn, StoreError};

/// The database's clock in milliseconds, written into each statement: leases compare times
/// of one clock, whatever the replicas' clocks say. Spelled out rather than called as the
/// schema's `grantdoctor_now_ms()`: the planner parses a SQL function's body again at every
/// call site, which cost more than running the statements.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}

/// What a replica may do with a refresh another may be leading.
#[derive(Debug, Clone)]
pub enum Turn {
    /// This replica leads, under this generation.
    Lead(i64),
    /// Another replica leads; its lease has this many milliseconds left.
    Wait(i64),
    /// The leader's answer, sealed.
    Landed(Vec<u8>),
}

/// One exchange asking for a lease, under a holder name unique to this asking: a lease its
/// asker never learned it took (the answer lost to a timeout) can then be freed by that name
/// without touching one taken since ([`free_many`]).
#[derive(Debug, Clone)]
pub struct Take {
    pub id: Vec<u8>,
    pub holder: String,
}

/// One lease operation of a batch: a take, or a leader's landing.
#[derive(Debug)]
pub enum Op {
    Take(Take),
    Land(Landing),
}

/// The answer to an [`Op`], of its kind.
#[derive(Debug, Clone)]
pub enum Answer {
    Turn(Turn),
    Landed(Landed),
}

/// Runs takes and landings together, in one statement for a batch of both: each is a row
/// of the same upsert, told apart by its holder (a landing proposes none), so the server
/// parses, plans and answers one statement where two went before, and locks every row of
/// the batch in one id order. More statements only when one batch has an id twice (an
/// upsert may touch a row once): repeated landings go in later rounds, and a take of an
/// id being landed goes after its landing. One answer per operation, in order.
pub async fn run_many(client: &Conn, ops: &[Op], lease_ms: i64) -> Result<Vec<Answer>, StoreError> {
    let mut answers: Vec<Option<Answer>> = vec![None; ops.len()];
    let id = |i: usize| match &ops[i] {
        Op::Take(t) => t.id.as_slice(),
        Op::Land(l) => l.id.as_slice(),
    };
    let mut first_take = std::collections::HashMap::new();
    let (mut landings, mut takes) = (Vec::new(), Vec::new());
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Land(_) => landings.push(i),
            Op::Take(t) => {
                if *first_take.entry(t.id.as_slice()).or_insert(i) == i {
                    takes.push(i);
                }
            }
        }
    }
    while !landings.is_empty() || !takes.is_empty() {
        let mut seen = std::collections::HashSet::with_capacity(landings.len());
        let (now, later): (Vec<usize>, Vec<usize>) =
            landings.into_iter().partition(|&i| seen.insert(id(i)));
        let landed_later: std::collections::HashSet<&[u8]> = later.iter().map(|&i| id(i)).collect();
        let (taking, waiting): (Vec<usize>, Vec<usize>) = takes
            .into_iter()
            .partition(|&i| !seen.contains(id(i)) && !landed_later.contains(id(i)));
        let round: Vec<usize> = now.iter().chain(&taking).copied().collect();
        let upserted = upsert(client, ops, &round, lease_ms).await?;
        for i in round {
            let row = upserted.get(id(i));
            answers[i] = match &ops[i] {
                Op::Land(_) => Some(Answer::Landed(match row {
                    Some(row) if row.inserted => Landed::Lost,
                    Some(row) if row.held => Landed::Wanted,
                    Some(_) => Landed::Done,
                    None => Landed::Lost,
                })),
                // Taken rows come back not wanted; a live lease marked wanted is another's.
                Op::Take(_) => row
                    .filter(|row| !row.wanted)
                    .map(|row| Answer::Turn(Turn::Lead(row.generation))),
            };
        }
        (landings, takes) = (later, waiting);
    }
    // The rest are another's, or this batch's first asker's: a later statement sees them.
    let others: Vec<usize> = (0..ops.len()).filter(|&i| answers[i].is_none()).collect();
    if !others.is_empty() {
        let ids: Vec<&[u8]> = others.iter().map(|&i| id(i)).collect();
        let looked = look_many(client, &ids).await?;
        for i in others {
            let turn = looked.get(id(i)).cloned().unwrap_or(Turn::Wait(0));
            answers[i] = Some(Answer::Turn(turn));
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

/// Takes the lease of each asked id that is free or expired, in one statement; says who has
/// the others. One answer per take, in order; an id asked twice is led by its first asker only.
pub async fn take_many(
    client: &Conn,
    takes: &[Take],
    lease_ms: i64,
) -> Result<Vec<Turn>, StoreError> {
    let ops: Vec<Op> = takes.iter().cloned().map(Op::Take).collect();
    Ok(run_many(client, &ops, lease_ms)
        .await?
        .into_iter()
        .map(|answer| match answer {
            Answer::Turn(turn) => turn,
            Answer::Landed(_) => unreachable!("a take is answered with a turn"),
        })
        .collect())
}

/// Ends each leader's lease as its [`End`] says, in one statement (more only when one batch
/// lands an id twice).
pub async fn land_many(client: &Conn, landings: &[Landing]) -> Result<Vec<Landed>, StoreError> {
    let ops: Vec<Op> = landings.iter().cloned().map(Op::Land).collect();
    Ok(run_many(client, &ops, 0)
        .await?
        .into_iter()
        .map(|answer| match answer {
            Answer::Landed(landed) => landed,
            Answer::Turn(_) => unreachable!("a landing is answered with a landed"),
        })
        .collect())
}

/// A row as the upsert left it.
struct Upserted {
    generation: i64,
    wanted: bool,
    /// Its lease is still held (a landing that found a follower waiting).
    held: bool,
    /// A landing found no row and inserted one (its holder is empty): that leader lost its
    /// lease.
    inserted: bool,
}

/// The one statement of takes and landings, for the operations `round` names (distinct ids).
///
/// A take proposes a row held under its name for the lease: a row that is free (expired,
/// and no answer kept) is taken over; a live one is marked wanted, so that its leader keeps
/// its answer for this follower; a landed one is left as it is. `excluded.lease_until - $7`
/// is a take's one reading of the clock.
///
/// A landing proposes a row of no holder and carries whether the leader asks to keep a
/// wanted lease in `wanted`; it ends the lease of its generation only, reading `wanted` as
/// the row has it when the statement holds its lock (a follower's mark that committed first
/// is seen). A row gone meanwhile (swept long after its lease expired, or forgotten by a
/// restart of the database: the table is unlogged) comes back inserted, told by its empty
/// holder: that leader lost its lease. The row it leaves is free, and holds the answer it
/// published, if any, for the keep like any other: it is this exchange's answer.
///
/// An upsert rather than an update joined to the arrays: its conflict check probes the
/// primary key whatever the plan, so it is prepared once, where the update's generic plan
/// ran 6 times slower and planning it each time cost more than running it.
async fn upsert(
    client: &Conn,
    ops: &[Op],
    round: &[usize],
    lease_ms: i64,
) -> Result<std::collections::HashMap<Vec<u8>, Upserted>, StoreError> {
    let mut rows: Vec<&Op> = round.iter().map(|&i| &ops[i]).collect();
    // In id order: two replicas' batches over the same ids never wait on each other in a
    // cycle (the frees lock them in this order too).
    rows.sort_by(|a, b| op_id(a).cmp(op_id(b)));
    let ids: Vec<&[u8]> = rows.iter().map(|op| op_id(op)).collect();
    let mut holders = Vec::with_capacity(rows.len());
    let mut generations = Vec::with_capacity(rows.len());
    let mut sealed: Vec<Option<&[u8]>> = Vec::with_capacity(rows.len());
    let mut keep = Vec::with_capacity(rows.len());
    let mut ask = Vec::with_capacity(rows.len());
    for op in &rows {
        match op {
            Op::Take(t) => {
                holders.push(t.holder.as_str());
                generations.push(1i64);
                sealed.push(None);
                keep.push(0i64);
                ask.push(false);
            }
            Op::Land(l) => {
                holders.push("");
                generations.push(l.generation);
                sealed.push(match &l.end {
                    End::Publish(sealed) => Some(sealed.as_slice()),
                    End::UnlessWanted | End::Free => None,
                });
                keep.push(l.keep_ms);
                ask.push(matches!(l.end, End::UnlessWanted));
            }
        }
    }
    let returned = client
        .query_prepared(
            concat!(
                "INSERT INTO grantdoctor_flights AS f
                    (id, holder, generation, lease_until, sealed, done_until, wanted)
                 SELECT id, holder, generation,
                        CASE WHEN holder = '' THEN 0 ELSE ",
                now_ms!(),
                " + $7 END,
                        sealed,
                        CASE WHEN sealed IS NULL THEN NULL ELSE ",
                now_ms!(),
                " + keep END,
                        ask
                 FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::bytea[], $5::int8[],
                             $6::bool[]) AS t(id, holder, generation, sealed, keep, ask)
                 ON CONFLICT (id) DO UPDATE SET
                    holder = CASE WHEN excluded.holder <> ''
                                   AND f.lease_until < excluded.lease_until - $7
                                  THEN excluded.holder ELSE f.holder END,
                    generation = CASE WHEN excluded.holder <> ''
                                       AND f.lease_until < excluded.lease_until - $7
                                      THEN f.generation + 1 ELSE f.generation END,
                    lease_until = CASE
                        WHEN excluded.holder = ''
                            THEN CASE WHEN excluded.wanted AND f.wanted
                                      THEN f.lease_until ELSE 0 END
                        WHEN f.lease_until < excluded.lease_until - $7
                            THEN excluded.lease_until
                        ELSE f.lease_until END,
                    sealed = excluded.sealed,
                    done_until = excluded.done_until,
                    wanted = CASE WHEN excluded.holder = '' THEN f.wanted
                                  ELSE f.lease_until >= excluded.lease_until - $7 END
                 WHERE CASE WHEN excluded.holder = '' THEN f.generation = excluded.generation
                            ELSE f.done_until IS NULL
                                 OR f.done_until < excluded.lease_until - $7 END
                 RETURNING f.id, f.generation, f.wanted, f.lease_until > 0, f.holder = ''"
            ),
            &[
                (&ids, Type::BYTEA_ARRAY),
                (&holders, Type::TEXT_ARRAY),
                (&generations, Type::INT8_ARRAY),
                (&sealed, Type::BYTEA_ARRAY),
                (&keep, Type::INT8_ARRAY),
                (&ask, Type::BOOL_ARRAY),
                (&lease_ms, Type::INT8),
            ],
        )
        .await?;
    Ok(returned
        .into_iter()
        .map(|row| {
            let upserted = Upserted {
                generation: row.get(1),
                wanted: row.get(2),
                held: row.get(3),
                inserted: row.get(4),
            };
            (row.get(0), upserted)
        })
        .collect())
}

fn op_id(op: &Op) -> &[u8] {
    match op {
        Op::Take(t) => &t.id,
        Op::Land(l) => &l.id,
    }
}

/// Frees the leases still held under these (id, holder) takes and holding no answer: their
/// takers went on without them, and nobody will land them. Returns how many were freed.
pub async fn free_many(client: &Conn, takes: &[Take]) -> Result<u64, StoreError> {
    let mut sorted: Vec<&Take> = takes.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&[u8]> = sorted.iter().map(|t| t.id.as_slice()).collect();
    let holders: Vec<&str> = sorted.iter().map(|t| t.holder.as_str()).collect();
    Ok(client
        .execute_prepared(
            "UPDATE grantdoctor_flights AS f SET lease_until = 0
             FROM unnest($1::bytea[], $2::text[]) AS t(id, holder)
             WHERE f.id = t.id AND f.holder = t.holder AND f.sealed IS NULL
               AND f.lease_until > 0",
            &[(&ids, Type::BYTEA_ARRAY), (&holders, Type::TEXT_ARRAY)],
        )
        .await?)
}

/// The state of each of `ids` as a follower sees it; an id without a row is absent.
async fn look_many(
    client: &Conn,
    ids: &[&[u8]],
) -> Result<std::collections::HashMap<Vec<u8>, Turn>, StoreError> {
    let rows = client
        .query_prepared(
            concat!(
                "SELECT id, lease_until - ",
                now_ms!(),
                ", sealed,
                    coalesce(done_until, 0) - ",
                now_ms!(),
                "
             FROM grantdoctor_flights WHERE id = ANY($1)"
            ),
            &[(&ids, Type::BYTEA_ARRAY)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let turn = turn_of(row.get(1), row.get(2), row.get(3));
            (row.get(0), turn)
        })
        .collect())
}

fn turn_of(left: i64, sealed: Option<Vec<u8>>, fresh: i64) -> Turn {
    match sealed {
        Some(sealed) if fresh > 0 => Turn::Landed(sealed),
        _ => Turn::Wait(left.max(0)),
    }
}

/// The state of `id` as a follower sees it.
pub async fn look(client: &Conn, id: &[u8]) -> Result<Turn, StoreError> {
    let rows = client
        .query_prepared(
            concat!(
                "SELECT lease_until - ",
                now_ms!(),
                ", sealed,
                    coalesce(done_until, 0) - ",
                now_ms!(),
                "
             FROM grantdoctor_flights WHERE id = $1"
            ),
            &[(&id, Type::BYTEA)],
        )
        .await?;
    Ok(rows.into_iter().next().map_or(Turn::Wait(0), |row| {
        turn_of(row.get(0), row.get(1), row.get(2))
    }))
}

/// A leader's end of its lease.
#[derive(Debug, Clone)]
pub struct Landing {
    pub id: Vec<u8>,
    pub generation: i64,
    pub end: End,
    /// How long a published answer is kept for late followers.
    pub keep_ms: i64,
}

/// How a leader ends its lease.
#[derive(Debug, Clone)]
pub enum End {
    /// Publishes this sealed answer, kept for followers and late twins.
    Publish(Vec<u8>),
    /// Frees the lease unless a follower marked it wanted: then it stays held, and the
    /// leader publishes (a failure's answer is sealed and stored only for those waiting).
    UnlessWanted,
    /// Frees the lease: the answer cannot be shared, a follower takes over at once.
    Free,
}

/// What became of a landing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    Done,
    /// [`End::UnlessWanted`] found a follower waiting: the lease is still held.
    Wanted,
    /// Another replica took the lease over meanwhile: this leader cannot publish.
    Lost,
}

/// Sealed answers to file in one statement (a batch of the records' writer).
#[derive(Debug, Clone)]
pub struct ToSeal {
    pub id: Vec<u8>,
    pub sealed: Vec<u8>,
    /// When this replica stops wanting it kept: a write retried after an outage keeps it
    /// only for what is left of its time.
    pub until: std::time::Instant,
}

/// The statement that files many sealed answers, with its parameters' types (prepare it
/// before pipelining) and columns.
pub struct SealedMany<'a> {
    pub sql: &'static str,
    pub types: [Type; 3],
    pub ids: Vec<&'a [u8]>,
    pub answers: Vec<&'a [u8]>,
    pub keep_ms: Vec<i64>,
}

/// Files many sealed answers at once: ids once each (the last answer for an id wins), each
/// kept what is left of its time; `None` when none is left to keep.
pub fn sealed_many(sealed: &[ToSeal]) -> Option<SealedMany<'_>> {
    let now = std::time::Instant::now();
    let mut latest: std::collections::HashMap<&[u8], &ToSeal> = Default::default();
    for s in sealed.iter().filter(|s| s.until > now) {
        latest.insert(&s.id, s);
    }
    if latest.is_empty() {
        return None;
    }
    let mut many = SealedMany {
        sql: concat!(
            "INSERT INTO grantdoctor_sealed (id, sealed, until)
             SELECT i, s, ",
            now_ms!(),
            " + k FROM unnest($1::bytea[], $2::bytea[], $3::int8[]) AS t(i, s, k)
             ON CONFLICT (id) DO UPDATE SET sealed = excluded.sealed, until = excluded.until"
        ),
        types: [Type::BYTEA_ARRAY, Type::BYTEA_ARRAY, Type::INT8_ARRAY],
        ids: Vec::with_capacity(latest.len()),
        answers: Vec::with_capacity(latest.len()),
        keep_ms: Vec::with_capacity(latest.len()),
    };
    for (id, s) in latest {
        many.ids.push(id);
        many.answers.push(s.sealed.as_slice());
        many.keep_ms
            .push(s.until.duration_since(now).as_millis() as i64);
    }
    Some(many)
}

/// The sealed answer filed under `id`, while it is kept.
pub async fn get_sealed(client: &Conn, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(client
        .query_prepared(
            concat!(
                "SELECT sealed FROM grantdoctor_sealed WHERE id = $1 AND until > ",
                now_ms!()
            ),
            &[(&id, Type::BYTEA)],
        )
        .await?
        .into_iter()
        .next()
        .map(|row| row.get(0)))
}

/// Deletes what outlived its use: sealed answers past their window, flights long finished.
pub async fn sweep(client: &Conn) -> Result<u64, StoreError> {
    let sealed = client
        .execute(
            concat!("DELETE FROM grantdoctor_sealed WHERE until < ", now_ms!()),
            &[],
        )
        .await?;
    let flights = client
        .execute(
            concat!(
                "DELETE FROM grantdoctor_flights
             WHERE lease_until < ",
                now_ms!(),
                " - 60000
               AND coalesce(done_until, 0) < ",
                now_ms!()
            ),
            &[],
        )
        .await?;
    Ok(sealed + flights)
}
