//! A synchronous connection to one server, the read buffer both kinds of connection parse
//! replies from ([`Inbox`]), and what a reader of replies offers the decoders of
//! `commands.rs` ([`Replies`]), whichever connection the replies came on.

use super::protocol::{self, Parse, Reply};
use super::{Endpoint, Settings};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::os::unix::net::UnixStream;

/// Bytes of requests written to one server before its replies are read: small enough for
/// the socket buffers to hold them while the server waits for us to read its replies, so a
/// pipeline never deadlocks.
pub(super) const BATCH_BYTES: usize = 64 * 1024;
/// The size of a connection's read buffer, and the size it shrinks back to after a big value.
pub(super) const READ_BUFFER: usize = 16 * 1024;

/// Why a call on a connection failed in a way that leaves the connection unusable.
#[derive(Debug)]
pub(super) enum Fault {
    /// Reading or writing failed, or timed out.
    Io(io::Error),
    /// The server answered something outside the protocol: we may be out of step.
    Protocol(String),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Self {
        Fault::Io(e)
    }
}

impl Fault {
    /// True when the peer had closed or reset the connection: a pooled connection to a
    /// restarted server fails this way before the request reaches anyone.
    pub(super) fn is_stale_connection(&self) -> bool {
        matches!(self, Fault::Io(e) if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
        ))
    }

    /// The same fault again, for each of the requests a broken connection fails.
    pub(super) fn again(&self) -> Fault {
        match self {
            Fault::Io(e) => Fault::Io(io::Error::new(e.kind(), e.to_string())),
            Fault::Protocol(msg) => Fault::Protocol(msg.clone()),
        }
    }
}

pub(super) type Io<T> = std::result::Result<T, Fault>;

/// The replies to one request, read one at a time: from a synchronous connection's socket,
/// or from the replies an async connection collected for the request.
pub(super) trait Replies {
    /// The next reply; its ranges index [`Replies::bytes`] until the next call.
    fn reply(&mut self) -> Io<Reply>;
    /// The bytes of a range of the last reply.
    fn bytes(&self, range: Range<usize>) -> &[u8];
}

/// The longest reply holding a value of `item_size` bytes: the VALUE/VA line and the block.
pub(super) fn reply_limit(item_size: usize) -> usize {
    item_size
        .min(protocol::MAX_VALUE)
        .saturating_add(protocol::MAX_LINE + 4)
}

/// A connection's read buffer, with the unread bytes in `start..end`.
pub(super) struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The longest reply accepted: a value block over the server's `item_size_max` (once
    /// learned) is a protocol error, the connection is dropped.
    pub(super) max_reply: usize,
}

impl Inbox {
    pub(super) fn new(max_reply: usize) -> Inbox {
        Inbox {
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            max_reply,
        }
    }

    /// The next whole reply in the buffer (its ranges index [`Inbox::bytes`] until the next
    /// read, and `whole` is the range of all its bytes), or how many unread bytes it needs.
    pub(super) fn next(&mut self) -> Io<Result<(Reply, Range<usize>), usize>> {
        match protocol::parse(&self.buf[self.start..self.end]) {
            Ok(Parse::Complete(mut r)) => {
                let base = self.start;
                r.data = r.data.start + base..r.data.end + base;
                r.name = r.name.start + base..r.name.end + base;
                r.opaque = r.opaque.start + base..r.opaque.end + base;
                self.start += r.consumed;
                Ok(Ok((r, base..self.start)))
            }
            Ok(Parse::Incomplete(need)) if need > self.max_reply => Err(Fault::Protocol(format!(
                "a reply announces {need} bytes, more than the server's item size limit allows \
                 ({} bytes)",
                self.max_reply
            ))),
            Ok(Parse::Incomplete(need)) => Ok(Err(need)),
            Err(e) => Err(Fault::Protocol(e.0)),
        }
    }

    pub(super) fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    /// Room to read at least one more byte into, towards `need` unread bytes in all. The
    /// buffer grows by doubling when it is full, never to more than twice what arrived: a
    /// reply announcing a huge value costs memory only as its bytes come in.
    pub(super) fn room(&mut self, need: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 64 * READ_BUFFER && need <= READ_BUFFER {
                self.buf = vec![0; READ_BUFFER];
            }
        }
        if self.start + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                let doubled = self.buf.len().saturating_mul(2).max(READ_BUFFER);
                self.buf.resize(doubled.min(need.max(self.end + 1)), 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Takes in the `n` bytes just read into [`Inbox::room`]; 0 means the server closed.
    pub(super) fn filled(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }
}

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            Stream::Unix(s) => s.write_all(buf),
        }
    }
}

/// One synchronous connection: the stream, its read buffer and the requests being
/// assembled in `out`.
pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) inbox: Inbox,
    pub(super) out: Vec<u8>,
}

/// The error for a host name that resolves to no address.
pub(super) fn no_address(host: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host} resolves to no address"),
    )
}

impl Conn {
    pub(super) fn open(endpoint: &Endpoint, settings: &Settings) -> io::Result<Conn> {
        let stream = match endpoint {
            Endpoint::Tcp { host, port } => {
                let mut last = None;
                let mut found = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    let attempt = match settings.connect_timeout {
                        Some(t) => TcpStream::connect_timeout(&addr, t),
                        None => TcpStream::connect(addr),
                    };
                    match attempt {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = match found {
                    Some(s) => s,
                    None => return Err(last.unwrap_or_else(|| no_address(host))),
                };
                s.set_nodelay(true)?;
                s.set_read_timeout(settings.socket_timeout)?;
                s.set_write_timeout(settings.socket_timeout)?;
                Stream::Tcp(s)
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(settings.socket_timeout)?;
                s.set_write_timeout(settings.socket_timeout)?;
                Stream::Unix(s)
            }
        };
        Ok(Conn {
            stream,
            inbox: Inbox::new(reply_limit(protocol::MAX_VALUE)),
            out: Vec::with_capacity(READ_BUFFER),
        })
    }

    /// Writes the assembled requests.
    pub(super) fn send(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(&self.out);
        self.out.clear();
        if self.out.capacity() > 4 * BATCH_BYTES {
            self.out = Vec::with_capacity(READ_BUFFER);
        }
        result
    }
}

impl Replies for Conn {
    fn reply(&mut self) -> Io<Reply> {
        loop {
            match self.inbox.next()? {
                Ok((r, _)) => return Ok(r),
                Err(need) => {
                    let room = self.inbox.room(need);
                    let n = loop {
                        match self.stream.read(room) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            other => break other?,
                        }
                    };
                    self.inbox.filled(n)?;
                }
            }
        }
    }

    fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.inbox.bytes(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose server side is the returned socket.
    fn conn_pair(max_reply: usize) -> (Conn, UnixStream) {
        let (client, server) = UnixStream::pair().unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let conn = Conn {
            stream: Stream::Unix(client),
            inbox: Inbox::new(max_reply),
            out: Vec::new(),
        };
        (conn, server)
    }

    #[test]
    fn a_huge_announced_value_costs_memory_only_as_it_arrives() {
        // Under the 1 GiB protocol ceiling, the server's limit unknown: the client reads on,
        // but its buffer follows the bytes that came, not the size the line announced.
        let (mut conn, mut server) = conn_pair(reply_limit(protocol::MAX_VALUE));
        server.write_all(b"VA 900000000 f0\r\n").unwrap();
        server.write_all(&[b'x'; 100_000]).unwrap();
        drop(server);
        let Err(Fault::Io(e)) = conn.reply() else {
            panic!("a cut reply must be an I/O error")
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            conn.inbox.buf.len() <= 4 * 100_000,
            "{} bytes held for 100,000 received",
            conn.inbox.buf.len()
        );
    }

    #[test]
    fn a_value_over_the_servers_item_size_is_a_protocol_error_before_any_read() {
        let (mut conn, mut server) = conn_pair(reply_limit(1024 * 1024));
        // Only the line: the client must not wait for the block (the socket stays open).
        server.write_all(b"VALUE k 0 2000000\r\n").unwrap();
        let Err(Fault::Protocol(msg)) = conn.reply() else {
            panic!("an oversized reply must be a protocol error")
        };
        assert!(msg.contains("item size limit"), "{msg}");
        assert!(conn.inbox.buf.len() <= READ_BUFFER);
        // And a legal one of the same size limit still reads, after the buffer grew.
        let (mut conn, mut server) = conn_pair(reply_limit(1024 * 1024));
        let block = vec![b'v'; 1024 * 1024];
        let writer = std::thread::spawn(move || {
            server.write_all(b"VA 1048576\r\n").unwrap();
            server.write_all(&block).unwrap();
            server.write_all(b"\r\n").unwrap();
        });
        let reply = conn.reply().unwrap();
        assert_eq!(reply.data.len(), 1024 * 1024);
        assert!(conn.bytes(reply.data).iter().all(|&b| b == b'v'));
        writer.join().unwrap();
    }
}
