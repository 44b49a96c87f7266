//! A blocking PostgreSQL connection whose every round trip has a deadline.
//!
//! The synchronous `postgres` crate waits for a reply as long as it takes: a server frozen
//! with SIGSTOP (or a host that vanished without a reset) holds the caller until it runs
//! again, since `statement_timeout` needs a running server and the kernel keeps
//! acknowledging the socket. This drives `tokio-postgres` the way that crate does — one
//! current-thread runtime per connection, entered only while a call waits — and gives each
//! wait [`tokio::time::timeout`]. A call past its deadline returns [`PgError::TimedOut`];
//! the caller then drops the connection (its socket closes with the runtime), because the
//! reply that is still owed would answer the next statement.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, GenericClient, Row, Socket, Statement, ToStatement};

/// A failed round trip.
#[derive(Debug)]
pub(super) enum PgError {
    /// The server's refusal, or the connection's failure.
    Pg(tokio_postgres::Error),
    /// No answer within the deadline; the connection is not usable any more.
    TimedOut(Duration),
    /// The connection's runtime could not be started (out of threads or descriptors).
    Runtime(std::io::Error),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Pg(e)
    }
}

/// Waits for `f` on `rt` at most `limit` (`None`: as long as it takes).
///
/// On a thread inside a caller's tokio runtime (a synchronous call from async code), where a
/// nested `block_on` would panic, the wait happens on a short-lived thread of its own.
fn within<T: Send>(
    rt: &Runtime,
    limit: Option<Duration>,
    f: impl Future<Output = Result<T, tokio_postgres::Error>> + Send,
) -> Result<T, PgError> {
    if crate::runtime::in_runtime() {
        return std::thread::scope(|s| {
            s.spawn(|| wait_on(rt, limit, f))
                .join()
                .unwrap_or_else(|_| {
                    Err(PgError::Runtime(std::io::Error::other("the wait panicked")))
                })
        });
    }
    wait_on(rt, limit, f)
}

fn wait_on<T>(
    rt: &Runtime,
    limit: Option<Duration>,
    f: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    match limit {
        None => rt.block_on(f).map_err(PgError::Pg),
        Some(d) => match rt.block_on(async { tokio::time::timeout(d, f).await }) {
            Ok(r) => r.map_err(PgError::Pg),
            Err(_) => Err(PgError::TimedOut(d)),
        },
    }
}

/// One connection: its runtime, the client half, and the deadline of each round trip.
pub(super) struct PgClient {
    client: tokio_postgres::Client,
    /// Shut down in the background by `drop` (never waiting, so that a connection can be
    /// dropped inside a caller's runtime, where waiting panics).
    rt: ManuallyDrop<Runtime>,
    timeout: Option<Duration>,
}

impl Drop for PgClient {
    fn drop(&mut self) {
        // SAFETY: `rt` is taken here, once, and not touched again: `self` is being dropped.
        let rt = unsafe { ManuallyDrop::take(&mut self.rt) };
        rt.shutdown_background();
    }
}

impl PgClient {
    /// Connects (TCP or socket, TLS, authentication) within `connect_timeout` in all;
    /// later round trips wait at most `timeout` each.
    pub(super) fn connect<T>(
        config: &Config,
        tls: T,
        connect_timeout: Option<Duration>,
        timeout: Option<Duration>,
    ) -> Result<PgClient, PgError>
    where
        T: MakeTlsConnect<Socket> + Send + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(PgError::Runtime)?;
        let (client, connection) = within(&rt, connect_timeout, config.connect(tls))?;
        // Runs whenever a call waits on the runtime; ends when the client or the socket goes.
        rt.spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("polycache: a postgres connection ended: {e}");
            }
        });
        Ok(PgClient {
            client,
            rt: ManuallyDrop::new(rt),
            timeout,
        })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Opens a transaction; dropped without [`PgTx::commit`], it rolls back.
    pub(super) fn transaction(&mut self) -> Result<PgTx<'_>, PgError> {
        let tx = within(&self.rt, self.timeout, self.client.transaction())?;
        Ok(PgTx {
            tx,
            rt: &self.rt,
            timeout: self.timeout,
        })
    }
}

/// A transaction on a [`PgClient`], with the same deadline per round trip.
pub(super) struct PgTx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    rt: &'a Runtime,
    timeout: Option<Duration>,
}

impl PgTx<'_> {
    pub(super) fn commit(self) -> Result<(), PgError> {
        within(self.rt, self.timeout, self.tx.commit())
    }
}

/// The round trips a connection and a transaction share, each under the deadline.
pub(super) trait RoundTrips {
    /// `tokio_postgres::Client` or `Transaction`.
    type Client: GenericClient + Sync;

    /// The client, the runtime that drives it, and the deadline of one round trip.
    fn parts(&self) -> (&Self::Client, &Runtime, Option<Duration>);

    fn prepare(&mut self, sql: &str) -> Result<Statement, PgError> {
        let (c, rt, limit) = self.parts();
        within(rt, limit, c.prepare(sql))
    }

    fn query<S: ?Sized + ToStatement + Sync + Send>(
        &mut self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        let (c, rt, limit) = self.parts();
        within(rt, limit, c.query(s, params))
    }

    fn query_opt<S: ?Sized + ToStatement + Sync + Send>(
        &mut self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError> {
        let (c, rt, limit) = self.parts();
        within(rt, limit, c.query_opt(s, params))
    }

    fn query_one<S: ?Sized + ToStatement + Sync + Send>(
        &mut self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError> {
        let (c, rt, limit) = self.parts();
        within(rt, limit, c.query_one(s, params))
    }

    fn execute<S: ?Sized + ToStatement + Sync + Send>(
        &mut self,
        s: &S,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, PgError> {
        let (c, rt, limit) = self.parts();
        within(rt, limit, c.execute(s, params))
    }

    fn batch_execute(&mut self, sql: &str) -> Result<(), PgError> {
        let (c, rt, limit) = self.parts();
        within(rt, limit, c.batch_execute(sql))
    }
}

impl RoundTrips for PgClient {
    type Client = tokio_postgres::Client;

    fn parts(&self) -> (&Self::Client, &Runtime, Option<Duration>) {
        (&self.client, &self.rt, self.timeout)
    }
}

impl<'a> RoundTrips for PgTx<'a> {
    type Client = tokio_postgres::Transaction<'a>;

    fn parts(&self) -> (&Self::Client, &Runtime, Option<Duration>) {
        (&self.tx, self.rt, self.timeout)
    }
}
