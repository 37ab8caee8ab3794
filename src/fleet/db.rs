//! One connection to PostgreSQL, kept open: connected at start, and reconnected in the
//! background whenever it drops, so a request never waits on a connection attempt. While it
//! is down, every operation fails at once with [`StoreError::Unavailable`] and the caller
//! falls back to what this replica holds.
//!
//! A connection may listen on a channel (`LISTEN`): what it hears, and when it stops
//! hearing (a notification sent while it was down is lost), goes to a [`Heard`] sink.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::url::{PgTarget, Tls};

/// Why a store operation failed. Never carries the URL (it holds the password).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is not connected")]
    Unavailable,
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// With its causes: the client's own text is only the kind ("error performing TLS
    /// handshake", "db error"), the why is in its sources.
    #[error("{}", with_causes(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Schema(String),
}

fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// Pause before the first reconnection attempt, doubled up to the second.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// A connected client and the statements it prepared, which live as long as the connection:
/// a statement on the token path is parsed and planned once per connection, not per run.
pub struct Conn {
    client: Client,
    prepared: std::sync::Mutex<HashMap<&'static str, Statement>>,
}

impl Conn {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            prepared: Default::default(),
        }
    }

    /// `sql` prepared with parameters of `types`, once per connection.
    pub async fn prepared(
        &self,
        sql: &'static str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.cache().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare_typed(sql, types).await?;
        self.cache().insert(sql, statement.clone());
        Ok(statement)
    }

    /// Like `query_typed`, through the statement prepared once.
    pub async fn query_prepared(
        &self,
        sql: &'static str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = self.statement_for(sql, params).await?;
        self.client.query(&statement, &values(params)).await
    }

    /// Like `execute_typed`, through the statement prepared once.
    pub async fn execute_prepared(
        &self,
        sql: &'static str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement_for(sql, params).await?;
        self.client.execute(&statement, &values(params)).await
    }

    /// The statement of `sql`; its parameter types are read from `params` only to prepare it.
    async fn statement_for(
        &self,
        sql: &'static str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.cache().get(sql) {
            return Ok(statement.clone());
        }
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        self.prepared(sql, &types).await
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Statement>> {
        self.prepared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn values<'a>(params: &[(&'a (dyn ToSql + Sync), Type)]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(value, _)| *value).collect()
}

impl std::ops::Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// What a listening connection tells its sink.
pub enum Heard<'a> {
    /// `LISTEN` is in place: from now on every notification is heard, none before.
    Listening,
    /// A notification's payload.
    Notified(&'a str),
    /// The connection ended: notifications are lost until [`Heard::Listening`] again.
    Deaf,
}

/// Where a listening connection reports what it hears.
pub type Sink = Arc<dyn Fn(Heard<'_>) + Send + Sync>;

/// A channel to listen on, and who is told.
#[derive(Clone)]
pub struct Listen {
    /// A plain identifier (it goes into the `LISTEN` statement as it is).
    pub channel: &'static str,
    pub sink: Sink,
}

/// A connection that heals itself.
pub struct Db {
    target: PgTarget,
    tls: Option<MakeRustlsConnect>,
    current: RwLock<Option<Arc<Conn>>>,
    /// The task driving the current connection, to end it from outside ([`Db::reset`]),
    /// and how many connections were made before it.
    driver: std::sync::Mutex<(Option<tokio::task::AbortHandle>, u64)>,
    listen: Option<Listen>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.target.shown())
    }
}

impl Db {
    /// Connects (trying for up to `wait`), then keeps the connection up in the background.
    pub async fn open(
        target: PgTarget,
        tls: Option<rustls::ClientConfig>,
        wait: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        Self::open_listening(target, tls, wait, None).await
    }

    /// [`Db::open`], listening on `listen`'s channel after every (re)connection.
    pub async fn open_listening(
        target: PgTarget,
        tls: Option<rustls::ClientConfig>,
        wait: Duration,
        listen: Option<Listen>,
    ) -> Result<Arc<Self>, StoreError> {
        let db = Arc::new(Self {
            tls: match target.tls {
                Tls::Off => None,
                Tls::Verified => tls.map(MakeRustlsConnect::new),
            },
            target,
            current: RwLock::new(None),
            driver: Default::default(),
            listen,
        });
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = RECONNECT_FIRST;
        let ended = loop {
            match db.connect().await {
                Ok(ended) => break ended,
                Err(e) if refused_for_good(&e) => return Err(e.into()),
                Err(e) if tokio::time::Instant::now() + pause >= deadline => return Err(e.into()),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        };
        tokio::spawn(db.clone().supervise(ended));
        Ok(db)
    }

    /// The live connection, or `Unavailable` at once while it is being re-established.
    pub fn client(&self) -> Result<Arc<Conn>, StoreError> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Unavailable)
    }

    /// Which connection is current: [`Db::reset`] ends that one only.
    pub fn generation(&self) -> u64 {
        self.driver.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Drops connection `generation` if it is still the current one, to be re-established
    /// in the background: for one that stopped answering while its socket stays open (a
    /// hung server process, a peer gone without a word), which would otherwise look up and
    /// fail every operation at its bound. One made since is left alone.
    pub fn reset(&self, generation: u64) {
        let mut driver = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        if driver.1 != generation {
            return;
        }
        if let Some(task) = driver.0.take() {
            self.current
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            task.abort();
            tracing::info!(
                event = "store_connection_reset",
                store = self.target.shown(),
                reason = "an operation went unanswered past its bound: reconnecting"
            );
        }
    }

    /// Connects (and listens) and installs the client; the handle ends when the connection
    /// does.
    async fn connect(&self) -> Result<tokio::task::JoinHandle<()>, tokio_postgres::Error> {
        let sink = self.listen.as_ref().map(|l| l.sink.clone());
        let (client, ended) = match &self.tls {
            None => {
                let (client, connection) = self.target.config.connect(NoTls).await?;
                (client, tokio::spawn(drive(connection, sink)))
            }
            Some(tls) => {
                let (client, connection) = self.target.config.connect(tls.clone()).await?;
                (client, tokio::spawn(drive(connection, sink)))
            }
        };
        if let Some(listen) = &self.listen {
            if let Err(e) = client
                .batch_execute(&format!("LISTEN {}", listen.channel))
                .await
            {
                ended.abort();
                return Err(e);
            }
            (listen.sink)(Heard::Listening);
        }
        let mut driver = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        *driver = (Some(ended.abort_handle()), driver.1 + 1);
        drop(driver);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(Conn::new(client)));
        Ok(ended)
    }

    async fn supervise(self: Arc<Self>, mut ended: tokio::task::JoinHandle<()>) {
        loop {
            let _ = (&mut ended).await;
            if let Some(listen) = &self.listen {
                (listen.sink)(Heard::Deaf);
            }
            self.current
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            tracing::debug!(event = "store_disconnected", store = self.target.shown());
            let mut pause = RECONNECT_FIRST;
            ended = loop {
                tokio::time::sleep(pause).await;
                match self.connect().await {
                    Ok(ended) => break ended,
                    Err(_) => pause = (pause * 2).min(RECONNECT_MAX),
                }
            };
            tracing::info!(event = "store_reconnected", store = self.target.shown());
        }
    }
}

/// Drives a connection to its end, telling `sink` of its notifications.
async fn drive<S, T>(mut connection: Connection<S, T>, sink: Option<Sink>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if let Some(sink) = &sink {
                    sink(Heard::Notified(n.payload()));
                }
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return,
        }
    }
}

/// Whether waiting cannot help: the server's certificate is not trusted, or the server
/// refused the login or the database. A server that is still starting is worth waiting for;
/// these are configuration errors, said at once.
fn refused_for_good(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if let Some(code) = e.code() {
        return [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_CATALOG_NAME,
        ]
        .contains(code);
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = cause {
        let tls = inner.downcast_ref::<rustls::Error>().or_else(|| {
            inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|io| io.downcast_ref::<rustls::Error>())
        });
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        cause = inner.source();
    }
    false
}
