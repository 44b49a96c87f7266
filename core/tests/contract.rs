//! The backend contract, written once and run on every scheme, through the sync API and
//! through the async API on a current-thread and on a multi-thread tokio runtime.
//!
//! - `contract/ops.rs`: [`ops::Ops`], one awaitable method per operation, which calls the
//!   sync method or its `*_async` twin as the run's [`ops::Mode`] says.
//! - `contract/body.rs`: the body, section by section, and [`body::Expect`]: what a scheme
//!   may do differently by design, and the known deviations (bugs) it has.
//! - `contract/schemes.rs`: how each scheme opens its store, and the shared test servers.
//!
//! Each scheme is a module with three tests, `sync`, `async_current_thread` and
//! `async_multi_thread`: `cargo test -p polycache --test contract redis::` runs one scheme.
//! A new backend joins by adding a function to `schemes.rs` and its name to the list below.
// Built with fewer backends (`make test` runs a memory://-only build), the helpers of the
// left-out backends' tests lie idle.
#![cfg_attr(
    not(all(
        feature = "redis",
        feature = "memcached",
        feature = "file",
        feature = "sqlite",
        feature = "postgres"
    )),
    allow(unused)
)]

#[path = "contract/body.rs"]
mod body;
#[path = "contract/ops.rs"]
mod ops;
#[path = "contract/schemes.rs"]
mod schemes;
#[path = "contract/structures.rs"]
mod structures;
#[path = "contract/tags.rs"]
mod tags;

use body::contract;
use ops::Mode;
use schemes::Fixture;

/// Runs the whole contract on the scheme `fixture` opens, through the API `mode` names.
/// A scheme this machine cannot run (`None`) is skipped, saying so.
fn run<F: Into<Option<Fixture>>>(fixture: fn() -> F, mode: Mode) {
    let Some(f) = fixture().into() else {
        eprintln!("skipped: this machine's server cannot run this scheme (see schemes.rs)");
        return;
    };
    mode.run(contract(f.caches(mode)));
}

macro_rules! schemes {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {$(
        $(#[$attr])*
        mod $name {
            use super::{run, schemes, Mode};
            #[test]
            fn sync() {
                run(schemes::$name, Mode::Sync);
            }
            #[test]
            fn async_current_thread() {
                run(schemes::$name, Mode::AsyncCurrentThread);
            }
            #[test]
            fn async_multi_thread() {
                run(schemes::$name, Mode::AsyncMultiThread);
            }
        }
    )*};
}

schemes! {
    #[cfg(feature = "memory")]
    memory,
    #[cfg(feature = "memory")]
    memory_lru,
    dummy,
    #[cfg(feature = "file")]
    file,
    #[cfg(feature = "sqlite")]
    sqlite,
    #[cfg(feature = "sqlite")]
    sqlite_memory,
    #[cfg(feature = "postgres")]
    postgres,
    #[cfg(feature = "redis")]
    redis,
    #[cfg(feature = "redis")]
    redis_unix,
    #[cfg(feature = "redis")]
    redis_tls,
    #[cfg(feature = "redis")]
    redis_replicas,
    #[cfg(feature = "redis")]
    redis_cluster,
    #[cfg(feature = "redis")]
    redis_sentinel,
    #[cfg(all(feature = "redis", feature = "memory"))]
    tiered_redis,
    #[cfg(all(feature = "redis", feature = "memory"))]
    tiered_tracking,
    #[cfg(feature = "memcached")]
    memcached,
    #[cfg(feature = "memcached")]
    memcached_unix,
    #[cfg(feature = "memcached")]
    memcached_namespace,
    custom,
}
