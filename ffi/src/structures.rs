//! `polycache_cache_redis_command` and `polycache_redis_reply`: Redis hashes, sets and sorted
//! sets through one allow-listed call (see `Cache::redis_command` in the core).

use crate::cache::polycache_cache;
use crate::error::polycache_error;
use crate::handle::{self, array, borrow, bytes, later_out, out, text};
use crate::panic::{boundary, guard};
use crate::queue::{polycache_queue, Output, POLYCACHE_OP_REDIS_COMMAND};
use crate::result::{polycache_result, Failure, POLYCACHE_RESULT_OK};
use polycache::{Key, RedisArg, RedisCommand, RedisReply};

/// What a `polycache_redis_arg` holds: `POLYCACHE_REDIS_ARG_KEY`, `_BYTES`, `_INT` or
/// `_FLOAT`.
pub type polycache_redis_arg_kind = u32;
/// A key of the cache (`data`/`len`: UTF-8 text), made into the full key
/// `{key_prefix}:{version}:{key}`; only where the command takes keys.
pub const POLYCACHE_REDIS_ARG_KEY: polycache_redis_arg_kind = 0;
/// Bytes (`data`/`len`): a member, a field, a value, a word such as `WITHSCORES`.
pub const POLYCACHE_REDIS_ARG_BYTES: polycache_redis_arg_kind = 1;
/// An integer (`int_value`), sent as decimal.
pub const POLYCACHE_REDIS_ARG_INT: polycache_redis_arg_kind = 2;
/// A number (`float_value`), such as a score.
pub const POLYCACHE_REDIS_ARG_FLOAT: polycache_redis_arg_kind = 3;

/// One argument of `polycache_cache_redis_command`: `kind` says which field is read.
///
/// A plain struct the caller fills and owns; polycache reads it during the call only.
#[repr(C)]
pub struct polycache_redis_arg {
    /// Which of the fields below is the argument.
    pub kind: polycache_redis_arg_kind,
    /// The bytes of a `KEY` or `BYTES` argument; may be NULL only when `len` is 0.
    pub data: *const u8,
    /// The number of bytes at `data`.
    pub len: usize,
    /// The value of an `INT` argument.
    pub int_value: i64,
    /// The value of a `FLOAT` argument.
    pub float_value: f64,
}

/// What kind of answer a `polycache_redis_reply` is.
pub type polycache_redis_kind = u32;
/// No value (a missing member's score; also an outage on a cache that fails open).
pub const POLYCACHE_REDIS_REPLY_NIL: polycache_redis_kind = 0;
/// An integer: `polycache_redis_reply_int`.
pub const POLYCACHE_REDIS_REPLY_INT: polycache_redis_kind = 1;
/// A double: `polycache_redis_reply_double`.
pub const POLYCACHE_REDIS_REPLY_DOUBLE: polycache_redis_kind = 2;
/// Bytes: `polycache_redis_reply_data` and `polycache_redis_reply_len`.
pub const POLYCACHE_REDIS_REPLY_BYTES: polycache_redis_kind = 3;
/// A status line such as `OK`: `polycache_redis_reply_data` and `polycache_redis_reply_len`.
pub const POLYCACHE_REDIS_REPLY_STATUS: polycache_redis_kind = 4;
/// A list: `polycache_redis_reply_array_len` and `polycache_redis_reply_element`.
pub const POLYCACHE_REDIS_REPLY_ARRAY: polycache_redis_kind = 5;

/// What a data-structure command answered (`polycache_cache_redis_command`).
///
/// Threads: immutable, so it may be read from any thread and freed from any thread.
/// Lifetime: a reply from `polycache_cache_redis_command` lives until
/// `polycache_redis_reply_free`; an element from `polycache_redis_reply_element` is borrowed
/// from its parent and lives as long as the parent (never freed on its own).
pub struct polycache_redis_reply {
    reply: Node,
}

/// A reply whose elements are replies themselves, so that C can point at each.
enum Node {
    Leaf(RedisReply),
    Array(Vec<polycache_redis_reply>),
}

impl polycache_redis_reply {
    pub(crate) fn new(reply: RedisReply) -> Self {
        let reply = match reply {
            RedisReply::Array(items) => {
                Node::Array(items.into_iter().map(polycache_redis_reply::new).collect())
            }
            leaf => Node::Leaf(leaf),
        };
        polycache_redis_reply { reply }
    }
}

/// Something valid to point at for empty bytes.
static EMPTY: [u8; 1] = [0];

/// Runs one data-structure command of the allow-list on `redis://` (`command`: its name, such
/// as `"SADD"`, any case; hash, set and sorted-set commands only).
///
/// `args` is an array of `n` arguments (NULL only when `n` is 0). On `POLYCACHE_RESULT_OK`,
/// `*reply_out` receives a new reply owned by the caller, released with
/// `polycache_redis_reply_free`. A command outside the allow-list, or any backend other than
/// Redis, gives `POLYCACHE_RESULT_UNSUPPORTED`; a key where the command takes none (or bytes
/// where it takes a key), or keys in different hash slots on a Cluster, give
/// `POLYCACHE_RESULT_INVALID_KEY` before anything is sent, as does an argument `kind` outside
/// the four; Redis' own errors (a wrong type) give `POLYCACHE_RESULT_BACKEND`. With
/// `fail_open`, an outage answers a `NIL` reply. Writes go to the leader and are never sent
/// twice. The call blocks; `polycache_cache_redis_command_start` is its non-blocking twin.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_redis_command(
    cache: *const polycache_cache,
    command: *const std::ffi::c_char,
    args: *const polycache_redis_arg,
    n: usize,
    reply_out: *mut *mut polycache_redis_reply,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, command: text, args: array(n), reply_out: out);
        let command = RedisCommand::from_name(command)?;
        // SAFETY: each argument's `data` is NULL or `len` readable bytes (the C API contract).
        let call = unsafe { owned_args(args)? };
        let call = borrowed_args(&call)?;
        let reply = cache.cache.redis_command(command, &call)?;
        reply_out.write(handle::into_raw(polycache_redis_reply::new(reply)));
        Ok(POLYCACHE_RESULT_OK)
    })
}

/// The reply `reply` points at: `Ok` a single answer, `Err` the elements of an array;
/// `None` for NULL.
fn reply_ref<'a>(
    reply: *const polycache_redis_reply,
) -> Option<Result<&'a RedisReply, &'a [polycache_redis_reply]>> {
    // SAFETY: reply is NULL or a reply from this library (or an element of one) not yet
    // freed (C API contract).
    unsafe { handle::borrow(reply, "reply") }
        .ok()
        .map(|r| match &r.reply {
            Node::Leaf(leaf) => Ok(leaf),
            Node::Array(items) => Err(items.as_slice()),
        })
}

/// The kind of `reply`; `POLYCACHE_REDIS_REPLY_NIL` when `reply` is NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_kind(
    reply: *const polycache_redis_reply,
) -> polycache_redis_kind {
    guard(POLYCACHE_REDIS_REPLY_NIL, || match reply_ref(reply) {
        Some(Ok(RedisReply::Int(_))) => POLYCACHE_REDIS_REPLY_INT,
        Some(Ok(RedisReply::Double(_))) => POLYCACHE_REDIS_REPLY_DOUBLE,
        Some(Ok(RedisReply::Bytes(_))) => POLYCACHE_REDIS_REPLY_BYTES,
        Some(Ok(RedisReply::Status(_))) => POLYCACHE_REDIS_REPLY_STATUS,
        Some(Err(_)) => POLYCACHE_REDIS_REPLY_ARRAY,
        _ => POLYCACHE_REDIS_REPLY_NIL,
    })
}

/// The integer of an `INT` reply; 0 for any other kind or NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_int(reply: *const polycache_redis_reply) -> i64 {
    guard(0, || match reply_ref(reply) {
        Some(Ok(RedisReply::Int(n))) => *n,
        _ => 0,
    })
}

/// The number of a `DOUBLE` reply; 0 for any other kind or NULL. (A RESP2 server sends
/// scores as `BYTES`, such as `"1.5"`.)
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_double(reply: *const polycache_redis_reply) -> f64 {
    guard(0.0, || match reply_ref(reply) {
        Some(Ok(RedisReply::Double(x))) => *x,
        _ => 0.0,
    })
}

/// The bytes of a `BYTES` or `STATUS` reply (`polycache_redis_reply_len` of them, not
/// NUL-terminated), owned by `reply`; NULL for any other kind or NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_data(
    reply: *const polycache_redis_reply,
) -> *const u8 {
    guard(std::ptr::null(), || {
        let data: &[u8] = match reply_ref(reply) {
            Some(Ok(RedisReply::Bytes(b))) => b,
            Some(Ok(RedisReply::Status(s))) => s.as_bytes(),
            _ => return std::ptr::null(),
        };
        if data.is_empty() {
            EMPTY.as_ptr()
        } else {
            data.as_ptr()
        }
    })
}

/// The number of bytes of a `BYTES` or `STATUS` reply; 0 for any other kind or NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_len(reply: *const polycache_redis_reply) -> usize {
    guard(0, || match reply_ref(reply) {
        Some(Ok(RedisReply::Bytes(b))) => b.len(),
        Some(Ok(RedisReply::Status(s))) => s.len(),
        _ => 0,
    })
}

/// The number of elements of an `ARRAY` reply; 0 for any other kind or NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_array_len(
    reply: *const polycache_redis_reply,
) -> usize {
    guard(0, || match reply_ref(reply) {
        Some(Err(items)) => items.len(),
        _ => 0,
    })
}

/// Element `i` of an `ARRAY` reply, borrowed from `reply` (valid until `reply` is freed; do
/// not free it); NULL when `i` is out of range, for any other kind, or for NULL.
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_element(
    reply: *const polycache_redis_reply,
    i: usize,
) -> *const polycache_redis_reply {
    guard(std::ptr::null(), || match reply_ref(reply) {
        Some(Err(items)) => items.get(i).map_or(std::ptr::null(), |item| {
            item as *const polycache_redis_reply
        }),
        _ => std::ptr::null(),
    })
}

/// Frees a reply from `polycache_cache_redis_command` (never an element); NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn polycache_redis_reply_free(reply: *mut polycache_redis_reply) {
    guard((), || {
        // SAFETY: reply is NULL or a reply from this library, freed once (C API contract).
        unsafe { handle::free(reply) }
    })
}

/// A `polycache_redis_arg` copied out of the caller's memory, so that it outlives the call.
enum OwnedArg {
    Key(String),
    Bytes(Vec<u8>),
    Int(i64),
    Float(f64),
    /// A `kind` outside the four: refused when the command is run, as the blocking call does.
    Unknown(polycache_redis_arg_kind),
}

/// Copies the caller's arguments; fails on NULL `data` (with a `len`) or a key that is not
/// UTF-8.
///
/// # Safety
/// Each argument's `data` is NULL or points to `len` readable bytes.
unsafe fn owned_args(args: &[polycache_redis_arg]) -> Result<Vec<OwnedArg>, Failure> {
    let mut owned = Vec::with_capacity(args.len());
    for arg in args {
        owned.push(match arg.kind {
            POLYCACHE_REDIS_ARG_KEY | POLYCACHE_REDIS_ARG_BYTES => {
                // SAFETY: by this function's contract.
                let data = unsafe { bytes(arg.data, arg.len, "args[i].data")? };
                if arg.kind == POLYCACHE_REDIS_ARG_BYTES {
                    OwnedArg::Bytes(data.to_vec())
                } else {
                    let key = std::str::from_utf8(data)
                        .map_err(|e| Failure::InvalidUtf8("args[i].data", e))?;
                    OwnedArg::Key(key.to_owned())
                }
            }
            POLYCACHE_REDIS_ARG_INT => OwnedArg::Int(arg.int_value),
            POLYCACHE_REDIS_ARG_FLOAT => OwnedArg::Float(arg.float_value),
            other => OwnedArg::Unknown(other),
        });
    }
    Ok(owned)
}

/// The core's arguments, borrowed from copied ones; an unknown `kind` is `INVALID_KEY`.
fn borrowed_args(args: &[OwnedArg]) -> Result<Vec<RedisArg<'_>>, Failure> {
    args.iter()
        .map(|arg| match arg {
            OwnedArg::Key(key) => Ok(RedisArg::Key(Key::new(key.as_str()))),
            OwnedArg::Bytes(b) => Ok(RedisArg::Bytes(b)),
            OwnedArg::Int(n) => Ok(RedisArg::Int(*n)),
            OwnedArg::Float(x) => Ok(RedisArg::Float(*x)),
            OwnedArg::Unknown(other) => Err(polycache::Error::new(
                polycache::ErrorKind::InvalidKey,
                format!("args[i].kind {other} is not a polycache_redis_arg_kind"),
            )
            .into()),
        })
        .collect()
}

/// Starts `polycache_cache_redis_command(cache, command, args, n, reply_out)` without
/// blocking; its completion (`POLYCACHE_OP_REDIS_COMMAND`) arrives on `queue` with
/// `user_data`.
///
/// `reply_out` must stay valid, and the caller must not access it, until this operation's
/// completion is drained (or the queue is freed): polycache writes it only inside the
/// `polycache_queue_drain` call that hands out the completion, and only when its `result`
/// is `OK`: `*reply_out` then receives a new reply owned by the caller, released with
/// `polycache_redis_reply_free`. The completion's other results are the blocking call's
/// codes (`UNSUPPORTED` for a command outside the allow-list or a backend other than
/// Redis, `INVALID_KEY`, `BACKEND`, …) with their `error`. The command name and the
/// arguments are copied. The start call itself fails only for NULL arguments (`args` may be
/// NULL only when `n` is 0; an argument's `data` only when its `len` is 0), a command name
/// or a key that is not UTF-8, or when polycache's runtime cannot start, and then no
/// completion follows. Inline completion (memory:// answers `UNSUPPORTED` at once) and
/// threads are as for `polycache_cache_get_start`.
#[no_mangle]
pub unsafe extern "C" fn polycache_cache_redis_command_start(
    cache: *const polycache_cache,
    queue: *const polycache_queue,
    command: *const std::ffi::c_char,
    args: *const polycache_redis_arg,
    n: usize,
    reply_out: *mut *mut polycache_redis_reply,
    user_data: *mut std::ffi::c_void,
    error_out: *mut *mut polycache_error,
) -> polycache_result {
    boundary(error_out, || {
        c_args!(cache: borrow, queue: borrow, command: text, args: array(n));
        let reply_out = later_out(reply_out, 1, "reply_out")?;
        // SAFETY: each argument's `data` is NULL or `len` readable bytes (the C API contract).
        let args = unsafe { owned_args(args)? };
        let command = RedisCommand::from_name(command);
        let cache = cache.cache.clone();
        let inline = cache.completes_inline();
        queue.start(inline, POLYCACHE_OP_REDIS_COMMAND, user_data, async move {
            let command = command?;
            let call = borrowed_args(&args)?;
            let reply = cache.redis_command_async(command, &call).await?;
            Ok(Output::Reply(reply, reply_out))
        })
    })
}
