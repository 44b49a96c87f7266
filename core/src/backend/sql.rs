//! The sql backend (being written; its cargo feature is off by default until it lands).
