//! The file backend (being written; its cargo feature is off by default until it lands).
