//! The requests of each operation and the decoding of their replies, shared by the
//! synchronous side (`blocking.rs`, pooled blocking connections) and the async side (`aio.rs`,
//! pipelined connections): one implementation of each operation, two transports.

use super::conn::{Fault, Io, Replies};
use super::protocol::{self, Kind, Opaque, Reply};
use super::{not_found, Server, ITEM_OVERHEAD};
use crate::error::{Error, ErrorKind, Result};
use crate::expiry::TimeToLive;
use crate::value::Value;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the replies to one command end, for a connection that reads them ahead of the
/// decoder (the async side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// One reply, carrying this opaque token when the command asked for one.
    One(Opaque),
    /// `VALUE` or `STAT` replies up to `END` (classic `get`, `stats`), or one error.
    UntilEnd,
}

/// A single-key (or server-wide) request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Request<'a> {
    /// `mg k v`: the value.
    Get,
    /// `mg k`: present or not.
    Exists,
    /// `mg k T…`: a new expiry.
    Touch(u64),
    /// `ms`: store, or add when `add`.
    Store {
        value: &'a [u8],
        exptime: u64,
        add: bool,
    },
    /// `md`.
    Delete,
    /// `ma` by a delta; `key` is the caller's key, for the not-found error.
    Arithmetic { delta: i64, key: &'a [u8] },
    /// `ma N0 J…`: a namespace generation, created when missing.
    Generation { initial: u64, delta: u64 },
    /// `flush_all` (no key).
    FlushAll,
    /// `mg k t`: the remaining TTL.
    Ttl,
    /// `ms … MR`: store only over a present key.
    Replace { value: &'a [u8], exptime: u64 },

    /// `mg k v c t`: the value, its CAS token and its remaining TTL.
    GetCas,
    /// `ms … C<cas>`: store only if the item is unchanged since `cas` was read.
    StoreCas {
        value: &'a [u8],
        exptime: u64,
        cas: u64,
    },
    /// `md … C<cas>`: delete only if the item is unchanged since `cas` was read.
    DeleteCas(u64),
}

/// What a request answered.
#[derive(Debug)]
pub(super) enum Answer {
    Value(Option<Value>),
    /// What `GetCas` read: the value, its CAS token, its remaining TTL in seconds.
    Cas(Option<(Value, u64, Option<u64>)>),
    Flag(bool),
    Count(u64),
    Done,
    Lifetime(TimeToLive),
}

impl Answer {
    pub(super) fn value(self) -> Option<Value> {
        match self {
            Answer::Value(v) => v,
            _ => None,
        }
    }
    pub(super) fn flag(self) -> bool {
        matches!(self, Answer::Flag(true))
    }
    pub(super) fn lifetime(self) -> TimeToLive {
        match self {
            Answer::Lifetime(t) => t,
            _ => TimeToLive::Missing,
        }
    }

    pub(super) fn cas(self) -> Option<(Value, u64, Option<u64>)> {
        match self {
            Answer::Cas(found) => found,
            _ => None,
        }
    }
    pub(super) fn count(self) -> u64 {
        match self {
            Answer::Count(n) => n,
            _ => 0,
        }
    }
}

impl Request<'_> {
    /// True when sending the request again on a fresh connection is safe: everything but
    /// an increment (of a counter or a namespace generation), which must not apply twice.
    pub(super) fn retry(&self) -> bool {
        match self {
            // A compare-and-set that did land answers "changed" when sent again.
            Request::Arithmetic { .. } | Request::StoreCas { .. } | Request::DeleteCas(_) => false,
            Request::Generation { delta, .. } => *delta == 0,
            _ => true,
        }
    }

    /// An error instead of a request that the server would refuse (a value over its item
    /// size limit, checked once a connection taught us the limit).
    pub(super) fn refused(&self, server: &Server, wire: &[u8]) -> Option<Error> {
        match self {
            Request::Store { value, .. }
            | Request::Replace { value, .. }
            | Request::StoreCas { value, .. } => too_large(server, wire, value),
            _ => None,
        }
    }

    /// Writes the request for the key `wire` and says how its reply ends.
    pub(super) fn encode(&self, out: &mut Vec<u8>, wire: &[u8], opaque: Opaque) -> Expect {
        match *self {
            Request::Get => protocol::get(out, wire, opaque),
            Request::Exists => protocol::exists(out, wire, opaque),
            Request::Touch(exptime) => protocol::touch(out, wire, exptime, opaque),
            Request::Store {
                value,
                exptime,
                add,
            } => protocol::store(out, wire, value, exptime, add, opaque),
            Request::Delete => protocol::delete(out, wire, opaque),
            Request::Arithmetic { delta, .. } => protocol::arithmetic(out, wire, delta, opaque),
            Request::Generation { initial, delta } => {
                protocol::arithmetic_or_create(out, wire, initial, delta, opaque)
            }
            Request::FlushAll => {
                out.extend_from_slice(b"flush_all\r\n");
                return Expect::One(None);
            }
            Request::Ttl => protocol::time_to_live(out, wire, opaque),
            Request::Replace { value, exptime } => {
                protocol::replace(out, wire, value, exptime, opaque)
            }

            Request::GetCas => protocol::get_cas(out, wire, opaque),
            Request::StoreCas {
                value,
                exptime,
                cas,
            } => protocol::store_cas(out, wire, value, exptime, cas, opaque),
            Request::DeleteCas(cas) => protocol::delete_cas(out, wire, cas, opaque),
        }
        Expect::One(opaque)
    }

    fn command(&self) -> &'static str {
        match self {
            Request::Get | Request::Exists | Request::Touch(_) | Request::Ttl | Request::GetCas => {
                "mg"
            }
            Request::Replace { .. } => "ms (replace)",
            Request::StoreCas { .. } => "ms (cas)",
            Request::DeleteCas(_) => "md (cas)",
            Request::Store { add: false, .. } => "ms",
            Request::Store { add: true, .. } => "ms (add)",
            Request::Delete => "md",
            Request::Arithmetic { .. } | Request::Generation { .. } => "ma",
            Request::FlushAll => "flush_all",
        }
    }

    /// Reads the reply: a fault leaves the connection out of step (it is dropped), an
    /// error of the server's own does not.
    pub(super) fn decode(&self, server: &Server, c: &mut dyn Replies) -> Io<Result<Answer>> {
        let r = c.reply()?;
        let answer = match (self, r.kind) {
            (Request::Get, Kind::Value) => {
                Answer::Value(Some(Value::from(c.bytes(r.data).to_vec())))
            }
            (Request::Get, Kind::Miss) => Answer::Value(None),
            (Request::Exists | Request::Touch(_), Kind::Hit) => Answer::Flag(true),
            (Request::Exists | Request::Touch(_), Kind::Miss) => Answer::Flag(false),
            (Request::Store { .. }, Kind::Hit) => Answer::Flag(true),
            (Request::Store { add: true, .. }, Kind::NotStored) => Answer::Flag(false),
            (Request::Delete, Kind::Hit) => Answer::Flag(true),
            (Request::Delete, Kind::NotFound) => Answer::Flag(false),
            (Request::Arithmetic { .. }, Kind::Value) => {
                let digits = c.bytes(r.data.clone());
                let Some(n) = protocol::parse_counter(digits) else {
                    return Err(Fault::Protocol(format!(
                        "ma answered a value that is not a counter: {:?}",
                        String::from_utf8_lossy(digits)
                    )));
                };
                if i64::try_from(n).is_err() {
                    return Ok(Err(Error::new(
                        ErrorKind::Overflow,
                        format!(
                            "the counter on memcached server {} is now {n}, past the 64-bit \
                             signed range (memcached counts in unsigned 64 bits)",
                            server.label
                        ),
                    )));
                }
                Answer::Count(n)
            }
            (Request::Arithmetic { key, .. }, Kind::NotFound) => return Ok(Err(not_found(key))),
            (Request::Arithmetic { .. }, Kind::ClientError)
                if c.bytes(r.data.clone())
                    .windows(11)
                    .any(|w| w == b"non-numeric") =>
            {
                return Ok(Err(Error::new(
                    ErrorKind::NotAnInteger,
                    "the cached value is not an integer memcached can increment: memcached's \
                     incr/decr work only on unsigned decimal numbers (a negative number cannot \
                     be incremented natively)",
                )))
            }
            (Request::Generation { .. }, Kind::Value) => {
                match protocol::parse_counter(c.bytes(r.data.clone())) {
                    Some(g) => Answer::Count(g),
                    None => {
                        return Ok(Err(Error::new(
                            ErrorKind::Backend,
                            format!(
                                "a namespace generation on memcached server {} is not a number",
                                server.label
                            ),
                        )))
                    }
                }
            }
            (Request::FlushAll, Kind::Ok) => Answer::Done,
            (Request::Ttl, Kind::Miss) => Answer::Lifetime(TimeToLive::Missing),
            (Request::Ttl, Kind::Hit) => {
                let flags = c.bytes(r.data.clone());
                let Some(secs) = protocol::ttl_flag(flags) else {
                    return Err(Fault::Protocol(format!(
                        "mg … t answered no remaining TTL: {:?}",
                        String::from_utf8_lossy(flags)
                    )));
                };
                Answer::Lifetime(match secs {
                    None => TimeToLive::Forever,
                    // memcached counts whole seconds: `t0` is an entry in its last second.
                    Some(secs) => TimeToLive::Left(std::time::Duration::from_secs(secs.max(1))),
                })
            }
            (Request::Replace { .. }, Kind::Hit) => Answer::Flag(true),
            (Request::Replace { .. }, Kind::NotStored) => Answer::Flag(false),

            (Request::GetCas, Kind::Value) => {
                let Some((cas, ttl)) = protocol::cas_and_ttl(c.bytes(r.name.clone())) else {
                    return Err(Fault::Protocol(
                        "mg with c and t answered without a CAS token or TTL".into(),
                    ));
                };
                let value = Value::from(c.bytes(r.data).to_vec());
                Answer::Cas(Some((value, cas, ttl)))
            }
            (Request::GetCas, Kind::Miss) => Answer::Cas(None),
            (Request::StoreCas { .. } | Request::DeleteCas(_), Kind::Hit) => Answer::Flag(true),
            (Request::StoreCas { .. } | Request::DeleteCas(_), Kind::Exists | Kind::NotFound) => {
                Answer::Flag(false)
            }
            _ => return unexpected(server, c, &r, self.command()).map(Err),
        };
        Ok(Ok(answer))
    }
}

/// An error for a reply that answers the command with an error of the server's own, or a
/// fault when the reply makes no sense for the command.
pub(super) fn unexpected(
    server: &Server,
    conn: &dyn Replies,
    r: &Reply,
    command: &str,
) -> Io<Error> {
    let msg = String::from_utf8_lossy(conn.bytes(r.data.clone())).into_owned();
    match r.kind {
        Kind::ServerError if msg.contains("too large") => Ok(Error::new(
            ErrorKind::ValueTooLarge,
            format!(
                "memcached server {} refused the value as too large for its item size limit \
                 ({msg}); any old value under the key is gone",
                server.label
            ),
        )),
        Kind::ClientError | Kind::ServerError => Ok(Error::new(
            ErrorKind::Backend,
            format!(
                "memcached server {} answered {command}: {msg}",
                server.label
            ),
        )),
        Kind::Error => Ok(Error::new(
            ErrorKind::Backend,
            format!(
                "memcached server {} does not know the {command} command (the meta protocol \
                 needs memcached 1.6 or later)",
                server.label
            ),
        )),
        other => Err(Fault::Protocol(format!(
            "unexpected {other:?} reply to {command}"
        ))),
    }
}

/// What the item-size check needs: the limit and the key length.
pub(super) fn too_large(server: &Server, key: &[u8], value: &[u8]) -> Option<Error> {
    let limit = server.item_size_max.load(Ordering::Relaxed);
    let room = limit.saturating_sub(ITEM_OVERHEAD + key.len());
    (value.len() > room).then(|| {
        Error::new(
            ErrorKind::ValueTooLarge,
            format!(
                "value of {} bytes is too large for memcached server {}: its item size limit \
                 is {limit} bytes (item_size_max, memcached -I), which leaves {room} bytes \
                 for a value under this key; nothing was stored",
                value.len(),
                server.label
            ),
        )
    })
}

/// `stats settings`, asked on every new connection unless `max_item_size` was given.
pub(super) fn ask_item_size_max(out: &mut Vec<u8>) -> Expect {
    out.extend_from_slice(b"stats settings\r\n");
    Expect::UntilEnd
}

/// Reads the answer to [`ask_item_size_max`]: `item_size_max`, if the server tells it.
pub(super) fn item_size_max(c: &mut dyn Replies) -> Io<Option<usize>> {
    let mut found = None;
    loop {
        let r = c.reply()?;
        match r.kind {
            Kind::Stat => {
                if c.bytes(r.name.clone()) == b"item_size_max" {
                    found = protocol::parse_counter(c.bytes(r.data))
                        .and_then(|n| usize::try_from(n).ok());
                }
            }
            Kind::End => return Ok(found),
            // A proxy that does not know the command: keep the default.
            Kind::Error | Kind::ClientError | Kind::ServerError => return Ok(None),
            _ => return Err(Fault::Protocol("unexpected reply to stats settings".into())),
        }
    }
}

/// What an encoder did with the items at the front of a server's share of a batch.
pub(super) struct Encoded {
    /// How many items the command covers (at least 1).
    pub(super) items: usize,
    /// How its replies end; `None` when nothing was sent for them, so no reply is due.
    pub(super) expect: Option<Expect>,
}

/// One server's share of a multi-key call, once it ran: its items and its error, if any.
pub(super) struct Outcome {
    pub(super) items: Vec<usize>,
    pub(super) error: Option<Error>,
}

/// A multi-key operation: pipelined to every server involved, by either transport.
pub(super) trait Batch {
    type Output;
    /// The keys as sent, which place the items on the ring.
    fn wire(&self) -> &[Cow<'_, [u8]>];
    /// Writes one command for the items at the front of `items` (the ones not yet
    /// encoded) and says how many it covered.
    fn encode(
        &self,
        items: &[usize],
        server: &Server,
        out: &mut Vec<u8>,
        opaque: Opaque,
    ) -> Encoded;
    /// Reads the whole reply to the command for `items`.
    fn decode(&mut self, items: &[usize], server: &Server, c: &mut dyn Replies) -> Io<()>;
    /// The result, once every server's share ran.
    fn finish(self, outcomes: Vec<Outcome>) -> Result<Self::Output>;
}

/// `get_many`: classic multi-key `get`s, hits in the order asked.
pub(super) struct GetMany<'k> {
    pub(super) wire: Vec<Cow<'k, [u8]>>,
    pub(super) values: Vec<Option<Value>>,
}

impl Batch for GetMany<'_> {
    type Output = Vec<Option<Value>>;
    fn wire(&self) -> &[Cow<'_, [u8]>] {
        &self.wire
    }
    fn encode(&self, items: &[usize], _: &Server, out: &mut Vec<u8>, _: Opaque) -> Encoded {
        Encoded {
            items: protocol::multi_get(out, items.iter().map(|&i| &*self.wire[i])),
            expect: Some(Expect::UntilEnd),
        }
    }
    fn decode(&mut self, items: &[usize], server: &Server, c: &mut dyn Replies) -> Io<()> {
        // Hits come back in the order asked; misses are left out.
        let mut next = 0;
        loop {
            let r = c.reply()?;
            match r.kind {
                Kind::Item => {
                    let key = c.bytes(r.name.clone());
                    while next < items.len() && *self.wire[items[next]] != *key {
                        next += 1;
                    }
                    let Some(&i) = items.get(next) else {
                        return Err(Fault::Protocol(format!(
                            "get answered a key that was not asked for: {:?}",
                            String::from_utf8_lossy(key)
                        )));
                    };
                    self.values[i] = Some(Value::from(c.bytes(r.data).to_vec()));
                    next += 1;
                }
                Kind::End => return Ok(()),
                _ => {
                    let err = unexpected(server, c, &r, "get")?;
                    // The rest of the reply is unknown: drop the connection.
                    return Err(Fault::Protocol(err.to_string()));
                }
            }
        }
    }
    fn finish(self, outcomes: Vec<Outcome>) -> Result<Self::Output> {
        if let Some(e) = outcomes.into_iter().find_map(|o| o.error) {
            return Err(e);
        }
        Ok(self.values)
    }
}

/// `set_many`: one `ms` per item; the indices of the items not stored.
pub(super) struct SetMany<'k, 'v> {
    pub(super) wire: Vec<Cow<'k, [u8]>>,
    pub(super) items: &'v [(&'v [u8], &'v [u8])],
    pub(super) exptime: u64,
    pub(super) failed: Vec<AtomicBool>,
}

impl Batch for SetMany<'_, '_> {
    type Output = Vec<usize>;
    fn wire(&self) -> &[Cow<'_, [u8]>] {
        &self.wire
    }
    fn encode(&self, todo: &[usize], server: &Server, out: &mut Vec<u8>, o: Opaque) -> Encoded {
        let i = todo[0];
        // Too large for this server: not sent (nothing stored), reported as failed.
        if too_large(server, &self.wire[i], self.items[i].1).is_some() {
            self.failed[i].store(true, Ordering::Relaxed);
            return Encoded {
                items: 1,
                expect: None,
            };
        }
        protocol::store(out, &self.wire[i], self.items[i].1, self.exptime, false, o);
        Encoded {
            items: 1,
            expect: Some(Expect::One(o)),
        }
    }
    fn decode(&mut self, unit: &[usize], server: &Server, c: &mut dyn Replies) -> Io<()> {
        let r = c.reply()?;
        if r.kind != Kind::Hit {
            unexpected(server, c, &r, "ms")?;
            self.failed[unit[0]].store(true, Ordering::Relaxed);
        }
        Ok(())
    }
    fn finish(self, outcomes: Vec<Outcome>) -> Result<Self::Output> {
        let mut first_error = None;
        let mut any_ok = false;
        for outcome in outcomes {
            match outcome.error {
                Some(e) => {
                    for &i in &outcome.items {
                        self.failed[i].store(true, Ordering::Relaxed);
                    }
                    first_error.get_or_insert(e);
                }
                None => any_ok = true,
            }
        }
        if let Some(e) = first_error {
            if !any_ok {
                // Nothing reached a server: the failure policy applies to the whole call.
                return Err(e);
            }
        }
        Ok(self
            .failed
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.load(Ordering::Relaxed).then_some(i))
            .collect())
    }
}

/// `delete_many`: one `md` per key; how many were there.
pub(super) struct DeleteMany<'k> {
    pub(super) wire: Vec<Cow<'k, [u8]>>,
    pub(super) deleted: usize,
    pub(super) errors: Vec<Error>,
}

impl Batch for DeleteMany<'_> {
    type Output = usize;
    fn wire(&self) -> &[Cow<'_, [u8]>] {
        &self.wire
    }
    fn encode(&self, todo: &[usize], _: &Server, out: &mut Vec<u8>, o: Opaque) -> Encoded {
        protocol::delete(out, &self.wire[todo[0]], o);
        Encoded {
            items: 1,
            expect: Some(Expect::One(o)),
        }
    }
    fn decode(&mut self, _: &[usize], server: &Server, c: &mut dyn Replies) -> Io<()> {
        let r = c.reply()?;
        match r.kind {
            Kind::Hit => self.deleted += 1,
            Kind::NotFound => {}
            _ => self.errors.push(unexpected(server, c, &r, "md")?),
        }
        Ok(())
    }
    fn finish(self, outcomes: Vec<Outcome>) -> Result<Self::Output> {
        if let Some(e) = outcomes.into_iter().find_map(|o| o.error) {
            return Err(e);
        }
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        Ok(self.deleted)
    }
}

/// The items of a call grouped by the server that holds them: `(server, items)` for each
/// server involved, items in call order.
pub(super) fn by_server(
    ring: &super::ring::Ring,
    servers: usize,
    keys: &[Cow<'_, [u8]>],
) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); servers];
    for (i, key) in keys.iter().enumerate() {
        groups[ring.server_of(key)].push(i);
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, items)| !items.is_empty())
        .collect()
}
