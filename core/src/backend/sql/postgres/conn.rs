//! PostgreSQL connections whose every round trip has a deadline, and what their failures mean.
//!
//! Both kinds of connection are a `tokio-postgres` client ([`Link`]); they differ in what
//! drives the socket:
//! - a **blocking** connection (the synchronous API) owns a current-thread runtime that the
//!   calling thread enters while it waits for an operation, as the `postgres` crate does: no
//!   thread hop per call;
//! - an **async** connection's task runs on polycache's runtime ([`crate::runtime`]), so it
//!   outlives any caller's runtime, and the operation is polled wherever it is awaited.
//!
//! Every round trip waits at most `socket_timeout` ([`tokio::time::timeout`], on a timer of
//! the runtime that drives the connection, so the caller's executor needs none). A round trip
//! past its deadline returns [`PgError::TimedOut`]; the caller then drops the connection,
//! because the reply that is still owed would answer the next statement. The synchronous
//! `postgres` crate cannot do that: it waits for a frozen server as long as it stays frozen.

use super::ops::{Fail, Op};
use super::queries::{Queries, N_QUERIES, Q};
use super::Inner;
use crate::error::ErrorKind;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, GenericClient, Row, Socket, Statement, ToStatement, Transaction};

/// A failed round trip.
#[derive(Debug)]
pub(super) enum PgError {
    /// The server's refusal, or the connection's failure.
    Pg(tokio_postgres::Error),
    /// No answer within the deadline; the connection is not usable any more.
    TimedOut(Duration),
    /// A runtime could not be started (out of threads or descriptors).
    Runtime(std::io::Error),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Pg(e)
    }
}

/// Awaits `f` at most `limit` (`None`: as long as it takes), on `timer`'s clock.
async fn bounded<T>(
    timer: &Handle,
    limit: Option<Duration>,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    let Some(d) = limit else {
        return f.await.map_err(PgError::Pg);
    };
    // The sleep registers with the timer of the handle entered when it is made.
    let deadline = {
        let _timer = timer.enter();
        tokio::time::timeout(d, f)
    };
    match deadline.await {
        Ok(r) => r.map_err(PgError::Pg),
        Err(_) => Err(PgError::TimedOut(d)),
    }
}

/// A connected client with the statements it has prepared and the deadline of its round trips.
pub(super) struct Link {
    client: tokio_postgres::Client,
    stmts: Vec<Option<Statement>>,
    timeout: Option<Duration>,
    /// The runtime that drives the connection: its timer bounds the round trips.
    timer: Handle,
}

impl Link {
    fn new(client: tokio_postgres::Client, timeout: Option<Duration>, timer: Handle) -> Link {
        Link {
            client,
            stmts: vec![None; N_QUERIES],
            timeout,
            timer,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Forgets the prepared statements (the table they name was dropped).
    pub(super) fn forget_statements(&mut self) {
        self.stmts.iter_mut().for_each(|s| *s = None);
    }

    /// The prepared statement for `q`, preparing it on first use on this connection.
    pub(super) async fn stmt(&mut self, q: Q, queries: &Queries) -> Result<Statement, PgError> {
        if let Some(s) = &self.stmts[q as usize] {
            return Ok(s.clone());
        }
        let s = bounded(
            &self.timer,
            self.timeout,
            self.client.prepare(queries.sql(q)),
        )
        .await?;
        self.stmts[q as usize] = Some(s.clone());
        Ok(s)
    }

    /// The prepared statements for `qs`, in order.
    pub(super) async fn stmts<const N: usize>(
        &mut self,
        qs: [Q; N],
        queries: &Queries,
    ) -> Result<[Statement; N], PgError> {
        let mut out = Vec::with_capacity(N);
        for q in qs {
            out.push(self.stmt(q, queries).await?);
        }
        Ok(out
            .try_into()
            .unwrap_or_else(|_| unreachable!("one statement per query")))
    }

    /// Round trips outside a transaction.
    pub(super) fn trips(&self) -> Trips<'_, &tokio_postgres::Client> {
        Trips {
            c: &self.client,
            timer: &self.timer,
            limit: self.timeout,
        }
    }

    /// Opens a transaction; dropped without [`Tx::commit`], it rolls back (tokio-postgres
    /// sends the `ROLLBACK` itself, also when a future is dropped mid-transaction).
    pub(super) async fn transaction(&mut self) -> Result<Tx<'_>, PgError> {
        let (timer, limit) = (&self.timer, self.timeout);
        let tx = bounded(timer, limit, self.client.transaction()).await?;
        Ok(Tx {
            trips: Trips {
                c: tx,
                timer,
                limit,
            },
        })
    }
}

/// The round trips of a client or a transaction, each under the deadline.
pub(super) struct Trips<'a, C> {
    c: C,
    timer: &'a Handle,
    limit: Option<Duration>,
}

/// What [`Trips`] runs on: `&Client` or a `Transaction`.
pub(super) trait OnClient {
    type Client: GenericClient + Sync;
    fn client(&self) -> &Self::Client;
}

impl OnClient for &tokio_postgres::Client {
    type Client = tokio_postgres::Client;
    fn client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl<'t> OnClient for Transaction<'t> {
    type Client = Transaction<'t>;
    fn client(&self) -> &Transaction<'t> {
        self
    }
}

impl<C: OnClient> Trips<'_, C> {
    pub(super) async fn query<S: ?Sized + ToStatement + Sync + Send>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        bounded(self.timer, self.limit, self.c.client().query(s, params)).await
    }

    pub(super) async fn query_opt<S: ?Sized + ToStatement + Sync + Send>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError> {
        bounded(self.timer, self.limit, self.c.client().query_opt(s, params)).await
    }

    pub(super) async fn query_one<S: ?Sized + ToStatement + Sync + Send>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError> {
        bounded(self.timer, self.limit, self.c.client().query_one(s, params)).await
    }

    pub(super) async fn execute<S: ?Sized + ToStatement + Sync + Send>(
        &self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, PgError> {
        bounded(self.timer, self.limit, self.c.client().execute(s, params)).await
    }

    pub(super) async fn batch_execute(&self, sql: &str) -> Result<(), PgError> {
        bounded(self.timer, self.limit, self.c.client().batch_execute(sql)).await
    }
}

/// A transaction on a [`Link`], with the same deadline per round trip.
pub(super) struct Tx<'a> {
    trips: Trips<'a, Transaction<'a>>,
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = Trips<'a, Transaction<'a>>;
    fn deref(&self) -> &Self::Target {
        &self.trips
    }
}

impl Tx<'_> {
    pub(super) async fn commit(self) -> Result<(), PgError> {
        let Trips { c, timer, limit } = self.trips;
        bounded(timer, limit, c.commit()).await
    }
}

/// A connection of either kind: the client, and for a blocking one the runtime it owns.
pub(super) struct PgConn {
    pub(super) link: Link,
    /// A blocking connection's own runtime; `None` when polycache's runtime drives it.
    /// Shut down in the background on drop (never waiting, so that a connection can be
    /// dropped inside a caller's runtime, where waiting panics).
    own: Option<ManuallyDrop<Runtime>>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let Some(rt) = self.own.as_mut() {
            // SAFETY: `rt` is taken here, once, and not touched again: `self` is being dropped.
            let rt = unsafe { ManuallyDrop::take(rt) };
            rt.shutdown_background();
        }
    }
}

/// What connecting needs: where, how, and the deadlines.
pub(super) struct Connect<T> {
    pub(super) config: Config,
    pub(super) tls: T,
    /// How long connecting may take in all (TCP, TLS, authentication).
    pub(super) bound: Option<Duration>,
    /// How long each later round trip may take.
    pub(super) socket_timeout: Option<Duration>,
}

impl<T> Connect<T>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// Connects and spawns the connection's task on the runtime of `timer` (the current one).
    async fn open(self, timer: Handle) -> Result<Link, PgError> {
        let (client, connection) =
            bounded(&timer, self.bound, self.config.connect(self.tls)).await?;
        // Ends when the client or the socket goes.
        timer.spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("polycache: a postgres connection ended: {e}");
            }
        });
        Ok(Link::new(client, self.socket_timeout, timer))
    }

    /// A blocking connection, with a runtime of its own.
    pub(super) fn blocking(self) -> Result<PgConn, PgError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(PgError::Runtime)?;
        let timer = rt.handle().clone();
        let link = within(&rt, self.open(timer))?;
        Ok(PgConn {
            link,
            own: Some(ManuallyDrop::new(rt)),
        })
    }

    /// An async connection, driven by polycache's runtime.
    pub(super) async fn on_runtime(self) -> Result<PgConn, PgError> {
        let handle = crate::runtime::handle()
            .map_err(|e| PgError::Runtime(std::io::Error::other(e.to_string())))?;
        // Connected on the runtime: the socket registers with its reactor. A caller that
        // gives up does not stop the task; the client it yields is then dropped (closed).
        let link = crate::runtime::spawn(self.open(handle))
            .await
            .map_err(|e| PgError::Runtime(std::io::Error::other(e.to_string())))??;
        Ok(PgConn { link, own: None })
    }
}

impl PgConn {
    /// Runs one attempt of `op` on a blocking connection, the calling thread driving its
    /// runtime.
    ///
    /// On a thread inside a caller's tokio runtime (a synchronous call from async code),
    /// where a nested `block_on` would panic, the wait happens on a short-lived thread of
    /// its own.
    pub(super) fn block_on<A: Sync, T: Send>(
        &mut self,
        inner: &Inner,
        args: &A,
        op: Op<A, T>,
    ) -> Result<T, Fail> {
        let Some(rt) = self.own.as_deref() else {
            unreachable!("block_on is only called on blocking connections")
        };
        within(rt, op(inner, &mut self.link, args))
    }
}

/// Drives `f` on `rt` from the calling thread (see [`PgConn::block_on`]).
fn within<T: Send>(rt: &Runtime, f: impl Future<Output = T> + Send) -> T {
    if crate::runtime::in_runtime() {
        return std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        });
    }
    rt.block_on(f)
}

/// The SQLSTATE of a server error, if it is one.
pub(super) fn sqlstate(e: &PgError) -> Option<&str> {
    match e {
        PgError::Pg(e) => e.code().map(|c| c.code()),
        PgError::TimedOut(_) | PgError::Runtime(_) => None,
    }
}

fn io_cause(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

/// True when the connection itself is gone (server restarted or unreachable) or owes a
/// reply it did not send in time.
pub(super) fn connection_lost(e: &PgError) -> bool {
    match (e, sqlstate(e)) {
        (_, Some(code)) => {
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
        }
        (PgError::Pg(e), None) => e.is_closed() || io_cause(e).is_some(),
        (PgError::TimedOut(_) | PgError::Runtime(_), None) => true,
    }
}

/// The polycache kind of a PostgreSQL failure.
pub(super) fn kind_of(e: &PgError) -> ErrorKind {
    let e = match e {
        PgError::TimedOut(_) => return ErrorKind::Timeout,
        PgError::Runtime(_) => return ErrorKind::Connection,
        PgError::Pg(e) => e,
    };
    match e.code().map(|c| c.code()) {
        // query_canceled (statement_timeout) and lock_not_available (lock_timeout).
        Some("57014" | "55P03") => ErrorKind::Timeout,
        Some(code) if code.starts_with("08") => ErrorKind::Connection,
        Some("57P01" | "57P02" | "57P03" | "53300") => ErrorKind::Connection,
        // Bad credentials or an unknown database: the URL is wrong.
        Some(code) if code.starts_with("28") || code == "3D000" => ErrorKind::Configuration,
        Some("54000") => ErrorKind::ValueTooLarge,
        Some(_) => ErrorKind::Backend,
        None if e.is_closed() => ErrorKind::Connection,
        None => match io_cause(e).map(std::io::Error::kind) {
            Some(std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
                ErrorKind::Timeout
            }
            Some(_) => ErrorKind::Connection,
            None => ErrorKind::Backend,
        },
    }
}

/// The text of a PostgreSQL failure, with the server's message and SQLSTATE when it sent one.
pub(super) fn describe(e: &PgError) -> String {
    let e = match e {
        PgError::TimedOut(d) => {
            return format!("no reply within socket_timeout ({} s)", d.as_secs_f64())
        }
        PgError::Runtime(e) => return format!("cannot start a runtime: {e}"),
        PgError::Pg(e) => e,
    };
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
