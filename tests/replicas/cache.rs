//! A ledger on the shared store holds a bounded number of refresh tokens: two in-process
//! ledgers ("replicas") on a real PostgreSQL, each holding at most eight, write twenty.
//! What one forgot, it fetches when a request presents it, with what the other did to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use grantdoctor::fleet::records::PgRecords;
use grantdoctor::fleet::{Fleet, FleetOptions, Outage, StoreUrl, Target};
use grantdoctor::ledger::backend::{Changes, Keys};
use grantdoctor::ledger::{Commit, GrantLedger, RecordStore, Row, fp_key};
use grantdoctor::oauth::{Fingerprinter, RequestFacts, ResponseFacts};

use super::common::postgres::Postgres;

const HELD: usize = 8;
const HOST: &str = "login.salesforce.com";

struct Replica {
    ledger: GrantLedger,
    fp: Fingerprinter,
    fetches: Arc<AtomicUsize>,
}

/// The shared store, counting the records a ledger fetches.
#[derive(Debug)]
struct Counted {
    records: Arc<PgRecords>,
    fetches: Arc<AtomicUsize>,
}

impl RecordStore for Counted {
    fn write(&self, rows: Vec<Row>) {
        self.records.write(rows)
    }
    fn write_durably(&self, rows: Vec<Row>) -> Option<Commit> {
        self.records.write_durably(rows)
    }
    fn changes(&self) -> Changes<'_> {
        self.records.changes()
    }
    fn fetch(&self, kind: &'static str, keys: Vec<String>) -> Changes<'_> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch(kind, keys)
    }
    fn keys_after(&self, kind: &'static str, after: String) -> Keys<'_> {
        self.records.keys_after(kind, after)
    }
    fn catching_up(&self) -> bool {
        self.records.catching_up()
    }
    fn shared(&self) -> bool {
        true
    }
}

async fn replica(pg: &Postgres) -> Replica {
    let fp = Fingerprinter::from_key(&[7; 32]);
    let Target::Postgres(target) = pg.url().parse::<StoreUrl>().unwrap().target().unwrap() else {
        panic!("a PostgreSQL URL");
    };
    let options = FleetOptions {
        store_ca: Vec::new(),
        lease: Duration::from_secs(30),
        replay_window: Duration::from_secs(30),
        retention: Default::default(),
        fingerprint_check: fp.check(),
    };
    let outage = Outage::new(Arc::default(), Default::default());
    let opened = Fleet::open(*target, options, outage).await.unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        records: opened.records,
        fetches: fetches.clone(),
    };
    Replica {
        ledger: GrantLedger::open_shared(Box::new(counted), HELD).await,
        fp,
        fetches,
    }
}

fn form() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    headers
}

impl Replica {
    fn request(&self, body: &str) -> RequestFacts {
        RequestFacts::parse(HOST, true, &form(), None, body.as_bytes(), &self.fp)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    fn token_fp(&self, token: &str) -> u64 {
        fp_key(&self.fp.fingerprint(token))
    }

    /// An exchange that issued `issued`, recorded as the proxy records it: judged after a
    /// sync, and answered only once its record committed.
    async fn exchange(&self, body: &str, user: usize, issued: &str, at: i64) {
        let req = self.request(body);
        self.ledger.sync(req.refresh_fp().map(fp_key)).await;
        let resp = format!(
            r#"{{"access_token":"x","refresh_token":"{issued}","scope":"api refresh_token","instance_url":"https://o1.my.salesforce.com","id":"https://{HOST}/id/00D000000000001/005{user:015}","issued_at":"{at}"}}"#
        );
        let resp = ResponseFacts::parse(200, resp.as_bytes(), &self.fp);
        let (_, commit) = self.ledger.remember(&req, &resp, at);
        assert!(
            commit
                .expect("a new refresh token is waited for")
                .wait(Duration::from_secs(5))
                .await,
            "the record of {issued} committed"
        );
    }

    async fn authorize(&self, i: usize, at: i64) {
        let body = format!("grant_type=authorization_code&client_id=3MVG9web&code=c{i}");
        self.exchange(&body, i, &format!("5Aep-{i}"), at).await;
    }

    async fn rotate(&self, i: usize, at: i64) {
        let body = format!("grant_type=refresh_token&client_id=3MVG9web&refresh_token=5Aep-{i}");
        self.exchange(&body, i, &format!("5Aep-{i}-next"), at).await;
    }

    /// Syncs until `done` holds (another replica's commit reaches this one's feed within
    /// moments of its announcement).
    async fn until(&self, presented: Option<u64>, what: &str, done: impl Fn(&GrantLedger) -> bool) {
        let started = Instant::now();
        loop {
            self.ledger.sync(presented).await;
            if done(&self.ledger) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never saw {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_replica_holds_a_bounded_number_of_tokens_and_fetches_a_forgotten_one_with_its_rotation()
{
    let pg = Postgres::start();
    let (a, b) = (replica(&pg).await, replica(&pg).await);
    let t0 = 1_764_093_000_000i64;
    for i in 0..20 {
        a.authorize(i, t0 + i as i64 * 1_000).await;
    }
    let held = a.ledger.known_refresh_tokens();
    assert!(
        (HELD * 3 / 4..=HELD).contains(&held),
        "a holds {held} of 20 tokens, not at most {HELD}"
    );
    let stored = pg.psql("SELECT count(*) FROM grantdoctor_records WHERE kind = 'refresh'");
    assert_eq!(stored.trim(), "20", "every token is in the shared store");
    // b took in the history but no refresh token: those it fetches when presented.
    b.until(None, "a's authorizations", |l| l.sizes().families == 20)
        .await;
    assert_eq!(b.ledger.known_refresh_tokens(), 0);

    // The oldest token, long forgotten by a, is rotated through b.
    let (first, last) = (a.token_fp("5Aep-0"), a.token_fp("5Aep-19"));
    assert!(
        !a.ledger.rotated(first),
        "a no longer holds the first token"
    );
    b.rotate(0, t0 + 60_000).await;
    a.until(Some(first), "the rotation of a forgotten token", |l| {
        l.rotated(first)
    })
    .await;
    let view = a.ledger.view(
        &a.request("grant_type=refresh_token&client_id=3MVG9web&refresh_token=5Aep-0"),
        t0 + 61_000,
    );
    let token = view.token.expect("a fetched the token's history");
    assert_eq!(token.issued_at, t0, "with its issue through a");
    assert_eq!(
        token.rotated_at,
        Some(t0 + 60_000),
        "and its rotation through b"
    );

    // A token a still holds is brought up to date by the change feed, without a fetch.
    assert!(!a.ledger.rotated(last));
    b.rotate(19, t0 + 62_000).await;
    a.until(None, "the rotation of a held token", |l| l.rotated(last))
        .await;
    assert!(a.ledger.known_refresh_tokens() <= HELD);

    // A replica started after all this left every token out of its first read, but learned
    // which the store holds: it fetches the first one, and not one no replica recorded.
    let c = replica(&pg).await;
    c.until(Some(first), "the first token's rotation at c", |l| {
        l.rotated(first)
    })
    .await;
    let fetched = c.fetches();
    assert!(fetched >= 1);
    for stranger in ["5Aep-never-1", "5Aep-never-2"] {
        c.ledger.sync(Some(c.token_fp(stranger))).await;
    }
    assert_eq!(
        c.fetches(),
        fetched,
        "a token the store never held is judged without a fetch"
    );
}

#[tokio::test]
async fn a_replica_opening_on_a_history_of_many_pages_takes_in_every_page_and_learns_every_token() {
    let pg = Postgres::start();
    let a = replica(&pg).await;
    a.authorize(0, 1_764_093_000_000).await;
    // A history larger than a page of the first read (20,000 rows) and of the token keys
    // (50,000), as replicas long gone left it: copies of the records one login wrote.
    pg.psql(
        "INSERT INTO grantdoctor_records (kind, key, value, at, seq, writer)
         SELECT 'refresh', 'fp_' || lpad(to_hex(i), 16, '0'), r.value, r.at,
                nextval('grantdoctor_records_seq'), 'gone'
         FROM generate_series(1, 60000) i,
              (SELECT value, at FROM grantdoctor_records WHERE kind = 'refresh' LIMIT 1) r;
         INSERT INTO grantdoctor_records (kind, key, value, at, seq, writer)
         SELECT 'authorizations', '00D000000000001|005u' || i || '|3MVG9web|' || r.at || '|',
                r.value, r.at, nextval('grantdoctor_records_seq'), 'gone'
         FROM generate_series(1, 25000) i,
              (SELECT value, at FROM grantdoctor_records WHERE kind = 'authorizations' LIMIT 1) r;",
    );
    let b = replica(&pg).await;
    assert_eq!(
        b.ledger.sizes().families,
        25_001,
        "every page of approvals taken in"
    );
    assert_eq!(b.ledger.known_refresh_tokens(), 0, "no refresh token read");
    // A token from the last page of keys is fetched when presented; a stranger is not.
    let last = 60_000u64;
    b.ledger.sync(Some(last)).await;
    assert_eq!(b.fetches(), 1);
    assert_eq!(b.ledger.known_refresh_tokens(), 1, "the token fetched");
    b.ledger.sync(Some(60_001)).await;
    assert_eq!(b.fetches(), 1, "no replica recorded this one");
}
