//! The synchronous side: blocking connections leased from each server's pool (the shared
//! one, `crate::pool`), single requests on one of them, and multi-key calls pipelined to
//! every server involved.

use super::commands::{by_server, Answer, Batch, Encoded, Outcome, Request};
use super::conn::{reply_limit, Conn, Fault, Io, BATCH_BYTES};
use super::{fault_error, io_error, Inner, Server};
use crate::error::{Error, Result};
use crate::policy::is_outage;
use crate::pool::Lease;
use std::ops::Range;
use std::sync::atomic::Ordering;

/// One server's share of a multi-key call, while it runs.
struct Job<'s> {
    server: usize,
    /// The items (indices into the call's keys) this server holds, in call order.
    items: Vec<usize>,
    /// How many of `items` were encoded into commands.
    written: usize,
    /// The commands sent and not yet answered: ranges of `items`, in order.
    sent: Vec<Range<usize>>,
    /// How many of `sent` were answered.
    read: usize,
    conn: Option<Lease<'s, Conn>>,
    reused: bool,
    retried: bool,
    error: Option<Error>,
}

impl Inner {
    /// Opens a connection and learns the server's item size limit on it.
    fn connect(&self, server: &Server) -> Result<Conn> {
        let mut conn = Conn::open(&server.endpoint, &self.settings)
            .map_err(|e| io_error(server, server.connect_failure(), e))?;
        if server.learn_item_size {
            let learned = (|| {
                super::commands::ask_item_size_max(&mut conn.out);
                conn.send()?;
                super::commands::item_size_max(&mut conn)
            })();
            match learned {
                Ok(Some(n)) => {
                    server.item_size_max.store(n, Ordering::Relaxed);
                    conn.inbox.max_reply = reply_limit(n);
                }
                Ok(None) => {}
                Err(fault) => return Err(fault_error(server, fault)),
            }
        }
        server.reached.store(true, Ordering::Relaxed);
        Ok(conn)
    }

    /// A pooled connection, or a new one.
    #[inline]
    fn checkout<'s>(&self, server: &'s Server) -> Result<Lease<'s, Conn>> {
        server.pool.lease(|| self.connect(server))
    }

    /// Runs `op` on a connection to `server`. A pooled connection the server had closed is
    /// replaced and `op` run again once, when `retry` says that is safe. Outages count
    /// towards taking the server out of the ring.
    fn call<T>(
        &self,
        server: &Server,
        retry: bool,
        mut op: impl FnMut(&mut Conn) -> Io<T>,
    ) -> Result<T> {
        self.check_alive(server)?;
        let mut conn = match self.checkout(server) {
            Ok(c) => c,
            Err(e) => {
                self.failed(server);
                return Err(e);
            }
        };
        let mut reused = conn.reused();
        loop {
            conn.out.clear();
            match op(&mut conn) {
                Ok(v) => {
                    drop(conn);
                    self.succeeded(server);
                    return Ok(v);
                }
                Err(fault) => {
                    conn.discard();
                    if reused && retry && fault.is_stale_connection() {
                        // The server restarted or dropped idle connections: so did the others.
                        server.pool.discard_idle();
                        conn = match self.checkout(server) {
                            Ok(c) => c,
                            Err(e) => {
                                self.failed(server);
                                return Err(e);
                            }
                        };
                        reused = false;
                        continue;
                    }
                    return Err(self.faulted(server, fault));
                }
            }
        }
    }

    /// Sends `request` for the key `wire` to `server` and reads its answer.
    pub(super) fn single_on(
        &self,
        server: &Server,
        wire: &[u8],
        request: Request<'_>,
    ) -> Result<Answer> {
        self.call(server, request.retry(), |c| {
            // Checked here, after the connection taught us the server's limit.
            if let Some(e) = request.refused(server, wire) {
                return Ok(Err(e));
            }
            request.encode(&mut c.out, wire, None);
            c.send()?;
            request.decode(server, c)
        })
        .and_then(|r| r)
    }

    /// Sends `request` for the caller's key `key` to the server that holds it.
    pub(super) fn single(&self, key: &[u8], request: Request<'_>) -> Result<Answer> {
        let wire = self.wire_key(key)?;
        self.single_on(self.server(&wire), &wire, request)
    }

    /// Sends one pipelined batch of commands per server for `batch`, to all servers before
    /// any reply is read, then reads every server's replies.
    pub(super) fn pipeline<B: Batch>(&self, mut batch: B) -> Result<B::Output> {
        let groups = by_server(&self.ring, self.servers.len(), batch.wire());
        let mut jobs: Vec<Job> = groups
            .into_iter()
            .map(|(server, items)| Job {
                server,
                items,
                written: 0,
                sent: Vec::new(),
                read: 0,
                conn: None,
                reused: false,
                retried: false,
                error: None,
            })
            .collect();
        for job in &mut jobs {
            let server = &self.servers[job.server];
            if let Err(e) = self.check_alive(server) {
                job.error = Some(e);
                continue;
            }
            match self.checkout(server) {
                Ok(conn) => {
                    job.reused = conn.reused();
                    job.conn = Some(conn);
                }
                Err(e) => {
                    self.failed(server);
                    job.error = Some(e);
                }
            }
        }
        loop {
            let mut busy = false;
            for job in jobs.iter_mut() {
                let server = &self.servers[job.server];
                let Some(conn) = job.conn.as_mut() else {
                    continue;
                };
                if job.written == job.items.len() {
                    continue;
                }
                busy = true;
                conn.out.clear();
                while job.written < job.items.len() && conn.out.len() < BATCH_BYTES {
                    let start = job.written;
                    let done: Encoded =
                        batch.encode(&job.items[start..], server, &mut conn.out, None);
                    job.written = (start + done.items.max(1)).min(job.items.len());
                    if done.expect.is_some() {
                        job.sent.push(start..job.written);
                    }
                }
                if let Err(e) = conn.send() {
                    self.job_fault(job, Fault::Io(e));
                }
            }
            for job in jobs.iter_mut() {
                let server = &self.servers[job.server];
                let mut fault = None;
                if let Some(conn) = job.conn.as_mut() {
                    while job.read < job.sent.len() {
                        let unit = &job.items[job.sent[job.read].clone()];
                        match batch.decode(unit, server, &mut **conn) {
                            Ok(()) => job.read += 1,
                            Err(f) => {
                                fault = Some(f);
                                break;
                            }
                        }
                    }
                }
                if let Some(f) = fault {
                    self.job_fault(job, f);
                    busy = true;
                }
            }
            if !busy {
                break;
            }
        }
        let outcomes = jobs
            .into_iter()
            .map(|mut job| {
                if let Some(conn) = job.conn.take() {
                    drop(conn);
                    self.succeeded(&self.servers[job.server]);
                }
                Outcome {
                    items: job.items,
                    error: job.error,
                }
            })
            .collect();
        batch.finish(outcomes)
    }

    /// A job's connection failed: retry it once on a fresh connection when the pooled one
    /// was stale and no reply was consumed yet, else record the error.
    fn job_fault<'s>(&'s self, job: &mut Job<'s>, fault: Fault) {
        let server = &self.servers[job.server];
        if let Some(conn) = job.conn.take() {
            conn.discard();
        }
        if job.reused && !job.retried && job.read == 0 && fault.is_stale_connection() {
            job.retried = true;
            job.reused = false;
            job.written = 0;
            job.sent.clear();
            server.pool.discard_idle();
            match self.checkout(server) {
                Ok(conn) => job.conn = Some(conn),
                Err(e) => {
                    self.failed(server);
                    job.error = Some(e);
                }
            }
            return;
        }
        job.error = Some(self.faulted(server, fault));
    }

    /// The error for a fault on a connection to `server`, counted towards taking it out of
    /// the ring when it is an outage.
    pub(super) fn faulted(&self, server: &Server, fault: Fault) -> Error {
        let err = fault_error(server, fault);
        if is_outage(&err) {
            self.failed(server);
        }
        err
    }
}
