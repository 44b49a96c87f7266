//! The memcached backend (being written; its cargo feature is off by default until it lands).
