//! The lease statements themselves, on a real PostgreSQL, as two replicas ("a" and "b") issue
//! them: who leads, who waits, and which answers are kept for whom.

use grantdoctor::fleet::db::Conn;
use grantdoctor::fleet::lease::{self, End, Landed, Landing, Take, Turn};
use tokio_postgres::NoTls;

use super::common::postgres::Postgres;

async fn migrated(pg: &Postgres) -> Conn {
    let (client, connection) = tokio_postgres::connect(&pg.url(), NoTls).await.unwrap();
    tokio::spawn(connection);
    grantdoctor::fleet::migrate::migrate(&client).await.unwrap();
    Conn::new(client)
}

fn asked(holder: &str, id: &[u8]) -> Take {
    Take {
        id: id.to_vec(),
        holder: holder.to_owned(),
    }
}

async fn take(client: &Conn, holder: &str, ids: &[&[u8]]) -> Vec<Turn> {
    let takes: Vec<Take> = ids.iter().map(|id| asked(holder, id)).collect();
    lease::take_many(client, &takes, 30_000).await.unwrap()
}

/// How many leases freeing `holder`'s take of `id` freed.
async fn free(client: &Conn, holder: &str, id: &[u8]) -> u64 {
    lease::free_many(client, &[asked(holder, id)])
        .await
        .unwrap()
}

async fn land(client: &Conn, id: &[u8], generation: i64, end: End) -> Landed {
    let landing = Landing {
        id: id.to_vec(),
        generation,
        end,
        keep_ms: 30_000,
    };
    lease::land_many(client, &[landing]).await.unwrap()[0]
}

fn publish(sealed: &[u8]) -> End {
    End::Publish(sealed.to_vec())
}

fn led(turn: &Turn) -> i64 {
    match turn {
        Turn::Lead(generation) => *generation,
        other => panic!("expected to lead, got {other:?}"),
    }
}

#[tokio::test]
async fn a_follower_that_waited_gets_a_failure_and_one_arriving_after_it_landed_leads_anew() {
    let pg = Postgres::start();
    let db = migrated(&pg).await;
    let generation = led(&take(&db, "a", &[b"waited"]).await[0]);
    assert!(matches!(take(&db, "b", &[b"waited"]).await[0], Turn::Wait(left) if left > 0));
    // The follower marked the lease: the leader is told, and keeps it until it publishes.
    let ended = land(&db, b"waited", generation, End::UnlessWanted).await;
    assert_eq!(ended, Landed::Wanted);
    assert!(matches!(lease::look(&db, b"waited").await.unwrap(), Turn::Wait(left) if left > 0));
    let published = land(&db, b"waited", generation, publish(b"failure")).await;
    assert_eq!(published, Landed::Done);
    match lease::look(&db, b"waited").await.unwrap() {
        Turn::Landed(sealed) => assert_eq!(sealed, b"failure"),
        other => panic!("the waiting follower should find the answer: {other:?}"),
    }

    // Nobody waited on this one: its failure is not kept, and the next asker leads at once.
    let generation = led(&take(&db, "a", &[b"alone"]).await[0]);
    let ended = land(&db, b"alone", generation, End::UnlessWanted).await;
    assert_eq!(ended, Landed::Done);
    let kept = pg.psql("SELECT count(sealed) FROM grantdoctor_flights WHERE id = 'alone'::bytea");
    assert_eq!(
        kept.trim(),
        "0",
        "a failure nobody waited for is not stored"
    );
    assert_eq!(led(&take(&db, "b", &[b"alone"]).await[0]), generation + 1);
}

#[tokio::test]
async fn a_published_success_is_kept_for_a_twin_arriving_after_it_landed_even_if_none_waited() {
    let pg = Postgres::start();
    let db = migrated(&pg).await;
    let generation = led(&take(&db, "a", &[b"rotation"]).await[0]);
    let published = land(&db, b"rotation", generation, publish(b"new token")).await;
    assert_eq!(published, Landed::Done);
    match &take(&db, "b", &[b"rotation"]).await[0] {
        Turn::Landed(sealed) => assert_eq!(sealed, b"new token"),
        other => panic!("a late twin must get the kept success, not lead: {other:?}"),
    }
}

#[tokio::test]
async fn a_live_lease_is_never_taken_twice_not_even_by_its_own_holder_or_within_one_batch() {
    let pg = Postgres::start();
    let db = migrated(&pg).await;
    let turns = take(&db, "a", &[b"one", b"one", b"two"]).await;
    let first = led(&turns[0]);
    assert!(matches!(turns[1], Turn::Wait(_)), "{:?}", turns[1]);
    led(&turns[2]);
    assert!(matches!(take(&db, "a", &[b"one"]).await[0], Turn::Wait(_)));
    // A leader whose lease another replica took over cannot publish.
    pg.psql("UPDATE grantdoctor_flights SET lease_until = 0 WHERE id = 'one'::bytea");
    let over = led(&take(&db, "b", &[b"one"]).await[0]);
    assert_eq!(over, first + 1);
    assert_eq!(
        land(&db, b"one", first, publish(b"stale")).await,
        Landed::Lost
    );
    // Both leaders landing in one statement: each is judged by its own generation.
    let both = [first, over].map(|generation| Landing {
        id: b"one".to_vec(),
        generation,
        end: publish(b"fresh"),
        keep_ms: 30_000,
    });
    let landed = lease::land_many(&db, &both).await.unwrap();
    assert_eq!(landed, [Landed::Lost, Landed::Done]);
}

#[tokio::test]
async fn a_leader_whose_row_was_swept_meanwhile_lost_it_and_the_row_it_leaves_is_free() {
    let pg = Postgres::start();
    let db = migrated(&pg).await;
    let generation = led(&take(&db, "a", &[b"swept"]).await[0]);
    pg.psql("DELETE FROM grantdoctor_flights WHERE id = 'swept'::bytea");
    assert_eq!(
        land(&db, b"swept", generation, End::UnlessWanted).await,
        Landed::Lost
    );
    assert_eq!(led(&take(&db, "b", &[b"swept"]).await[0]), generation + 1);
    // A wanted lease stays held through an unless-wanted landing, in a batch landing
    // another lease too.
    let wanted = led(&take(&db, "a", &[b"wanted"]).await[0]);
    assert!(matches!(
        take(&db, "b", &[b"wanted"]).await[0],
        Turn::Wait(_)
    ));
    let both = [
        Landing {
            id: b"wanted".to_vec(),
            generation: wanted,
            end: End::UnlessWanted,
            keep_ms: 30_000,
        },
        Landing {
            id: b"swept".to_vec(),
            generation: generation + 1,
            end: End::Free,
            keep_ms: 30_000,
        },
    ];
    assert_eq!(
        lease::land_many(&db, &both).await.unwrap(),
        [Landed::Wanted, Landed::Done]
    );
    assert!(matches!(
        take(&db, "c", &[b"wanted"]).await[0],
        Turn::Wait(_)
    ));
    led(&take(&db, "c", &[b"swept"]).await[0]);
}

#[tokio::test]
async fn a_lease_whose_taker_never_learned_it_leads_is_freed_by_its_holder_name_only() {
    let pg = Postgres::start();
    let db = migrated(&pg).await;
    // "a-1" took it, but its answer was lost: "a-1" went on alone and will never land it.
    let lost = led(&take(&db, "a-1", &[b"orphan"]).await[0]);
    assert!(matches!(take(&db, "b-1", &[b"orphan"]).await[0], Turn::Wait(left) if left > 0));
    // Another name frees nothing, not even one of the same replica.
    assert_eq!(free(&db, "a-2", b"orphan").await, 0);
    assert_eq!(free(&db, "a-1", b"orphan").await, 1);
    // The follower may take it over at once.
    assert!(matches!(
        lease::look(&db, b"orphan").await.unwrap(),
        Turn::Wait(0)
    ));
    let over = led(&take(&db, "b-1", &[b"orphan"]).await[0]);
    assert_eq!(over, lost + 1);
    // Freeing the lost take again (a later round) leaves the new leader's lease alone.
    assert_eq!(free(&db, "a-1", b"orphan").await, 0);
    assert!(matches!(take(&db, "c-1", &[b"orphan"]).await[0], Turn::Wait(left) if left > 0));
    // A published answer is never freed away.
    assert_eq!(
        land(&db, b"orphan", over, publish(b"answer")).await,
        Landed::Done
    );
    assert_eq!(free(&db, "b-1", b"orphan").await, 0);
    assert!(matches!(
        lease::look(&db, b"orphan").await.unwrap(),
        Turn::Landed(_)
    ));
}

#[tokio::test]
async fn takes_and_landings_of_one_batch_each_get_their_answer_and_a_take_of_an_id_landed_in_it_goes_after()
 {
    let pg = Postgres::start();
    let db = migrated(&pg).await;
    let ending = led(&take(&db, "a", &[b"ending"]).await[0]);
    let held = led(&take(&db, "a", &[b"held"]).await[0]);
    let published = led(&take(&db, "a", &[b"published"]).await[0]);
    let landing = |id: &[u8], generation, end| {
        lease::Op::Land(Landing {
            id: id.to_vec(),
            generation,
            end,
            keep_ms: 30_000,
        })
    };
    let ops = [
        lease::Op::Take(asked("b-1", b"ending")),
        landing(b"ending", ending, End::Free),
        lease::Op::Take(asked("b-2", b"held")),
        lease::Op::Take(asked("b-3", b"fresh")),
        landing(b"published", published, publish(b"answer")),
        lease::Op::Take(asked("b-4", b"published")),
        // A stale landing of an id landed in the same batch: a later round, and lost.
        landing(b"ending", ending - 1, End::Free),
    ];
    let answers = lease::run_many(&db, &ops, 30_000).await.unwrap();
    let turn = |i: usize| match &answers[i] {
        lease::Answer::Turn(turn) => turn.clone(),
        other => panic!("operation {i} is a take, answered {other:?}"),
    };
    let landed = |i: usize| match &answers[i] {
        lease::Answer::Landed(landed) => *landed,
        other => panic!("operation {i} is a landing, answered {other:?}"),
    };
    assert_eq!(answers.len(), ops.len());
    // Freed in this batch, then taken over by the take that came before it in the batch.
    assert_eq!(landed(1), Landed::Done);
    assert_eq!(led(&turn(0)), ending + 1);
    // A live lease is another's; a new id is led at once.
    assert!(matches!(turn(2), Turn::Wait(left) if left > 0));
    assert_eq!(led(&turn(3)), 1);
    // The published answer is the twin's, taken in the same batch as its landing.
    assert_eq!(landed(4), Landed::Done);
    assert!(matches!(turn(5), Turn::Landed(ref sealed) if sealed == b"answer"));
    assert_eq!(landed(6), Landed::Lost);
    // The take marked the live lease wanted: its leader keeps it to publish.
    assert_eq!(
        land(&db, b"held", held, End::UnlessWanted).await,
        Landed::Wanted
    );
    let holders = pg.psql(
        "SELECT count(*) FROM grantdoctor_flights WHERE id IN ('ending'::bytea, 'fresh'::bytea) AND holder LIKE 'b-%'",
    );
    assert_eq!(holders.trim(), "2");
}
