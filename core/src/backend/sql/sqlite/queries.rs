//! The SQL of the `sqlite://` backend: every statement rendered once for its table
//! ([`Queries`]), and the many-key statements rendered for a number of keys.

use super::super::TableName;

/// A row is valid when its value is bytes, its size matches, and its expiry is a number.
fn valid(q: &str) -> String {
    format!(
        "(typeof({q}value) IN ('blob', 'text') AND typeof({q}byte_size) = 'integer' \
         AND {q}byte_size = length({q}key) + length(CAST({q}value AS BLOB)) \
         AND typeof({q}expires_at) IN ('integer', 'null'))"
    )
}

fn alive(q: &str, now: &str) -> String {
    format!("({q}expires_at IS NULL OR {q}expires_at > {now})")
}

/// The SQL of every statement, rendered once for the table.
pub(super) struct Queries {
    pub(super) table: TableName,
    pub(super) create: String,
    pub(super) get: String,
    pub(super) set: String,
    pub(super) add: String,
    pub(super) delete: String,
    pub(super) has_key: String,
    pub(super) touch: String,
    pub(super) incr: String,
    pub(super) delete_corrupt: String,
    pub(super) clear_all: String,
    pub(super) clear_prefix: String,
    pub(super) count: String,
    pub(super) sweep_end: String,
    pub(super) sweep_delete: String,
    pub(super) sample: String,
    pub(super) id_span: String,
    pub(super) oldest: String,
    pub(super) delete_upto: String,
    /// The row counter of Django's cull: its table, its first value, its triggers.
    pub(super) count_create: String,
    pub(super) count_read: String,
    pub(super) hash_exists: String,
    pub(super) cull_expired: String,
    pub(super) cull_oldest: String,
    /// `ttl` and `set(xx=True)`.
    pub(super) ttl: String,
    pub(super) replace: String,
    /// A page of `keys`/`iter_keys`: live rows after an id whose key passes a `GLOB`.
    pub(super) scan: String,
    pub(super) delete_if_equals: String,
    pub(super) extend_if_equals: String,
}

impl Queries {
    pub(super) fn new(table: TableName) -> Queries {
        let t = &table.quoted;
        let tq = format!("{t}.");
        let upsert = format!(
            "INSERT INTO {t} (key_hash, key, value, expires_at, byte_size) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key_hash) DO UPDATE SET \
             key = excluded.key, value = excluded.value, expires_at = excluded.expires_at, \
             byte_size = excluded.byte_size"
        );
        Queries {
            create: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   id INTEGER PRIMARY KEY, \
                   key_hash INTEGER NOT NULL, \
                   key BLOB NOT NULL, \
                   value BLOB NOT NULL, \
                   expires_at INTEGER, \
                   byte_size INTEGER NOT NULL); \
                 CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t} (key_hash);",
                table.index
            ),
            get: format!(
                "SELECT id, value, expires_at, byte_size FROM {t} WHERE key_hash = ?1 AND key = ?2"
            ),
            add: format!(
                "{upsert} WHERE NOT ({tq}key = excluded.key AND {} AND {})",
                alive(&tq, "?6"),
                valid(&tq)
            ),
            set: upsert,
            delete: format!(
                "DELETE FROM {t} WHERE key_hash = ?1 AND key = ?2 RETURNING {} AND {}",
                alive("", "?3"),
                valid("")
            ),
            has_key: format!(
                "SELECT 1 FROM {t} WHERE key_hash = ?1 AND key = ?2 AND {} AND {}",
                alive("", "?3"),
                valid("")
            ),
            touch: format!(
                "UPDATE {t} SET expires_at = ?3 WHERE key_hash = ?1 AND key = ?2 AND {} AND {}",
                alive("", "?4"),
                valid("")
            ),
            // One statement: the function applies exactly the rules of `apply_delta` and
            // answers NULL when they refuse, so the row stays as it was.
            incr: format!(
                "UPDATE {t} SET value = polycache_incr(value, ?3), \
                   byte_size = length(key) + length(polycache_incr(value, ?3)) \
                 WHERE key_hash = ?1 AND key = ?2 AND {} AND {} \
                   AND polycache_incr(value, ?3) IS NOT NULL \
                 RETURNING value",
                alive("", "?4"),
                valid("")
            ),
            delete_corrupt: format!("DELETE FROM {t} WHERE id = ?1 AND NOT {}", valid("")),
            clear_all: format!("DELETE FROM {t}"),
            // substr() on a BLOB counts bytes and compares exactly: unlike LIKE, it is
            // case-sensitive and needs no escaping of % and _.
            clear_prefix: format!("DELETE FROM {t} WHERE substr(key, 1, ?1) = ?2"),
            count: format!("SELECT count(*) FROM {t}"),
            sweep_end: format!(
                "SELECT max(id) FROM (SELECT id FROM {t} WHERE id > ?1 ORDER BY id LIMIT ?2)"
            ),
            sweep_delete: format!(
                "DELETE FROM {t} WHERE id > ?1 AND id <= ?2 AND expires_at <= ?3"
            ),
            sample: format!("SELECT key_hash, byte_size FROM {t} ORDER BY key_hash DESC LIMIT ?1"),
            id_span: format!("SELECT min(id), max(id) FROM {t}"),
            oldest: format!("SELECT id, byte_size FROM {t} WHERE id > ?1 ORDER BY id LIMIT ?2"),
            delete_upto: format!("DELETE FROM {t} WHERE id <= ?1"),
            // One write transaction: no row can come or go between the count and the
            // triggers that keep it.
            count_create: format!(
                "BEGIN IMMEDIATE; \
                 CREATE TABLE IF NOT EXISTS {ct} (\
                   id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL); \
                 INSERT OR IGNORE INTO {ct} (id, n) SELECT 0, count(*) FROM {t}; \
                 CREATE TRIGGER IF NOT EXISTS \"{stem}_insert\" AFTER INSERT ON {t} \
                   BEGIN UPDATE {ct} SET n = n + 1 WHERE id = 0; END; \
                 CREATE TRIGGER IF NOT EXISTS \"{stem}_delete\" AFTER DELETE ON {t} \
                   BEGIN UPDATE {ct} SET n = n - 1 WHERE id = 0; END; \
                 COMMIT;",
                ct = table.count_table,
                stem = table.count_stem,
            ),
            count_read: format!("SELECT n FROM {} WHERE id = 0", table.count_table),
            hash_exists: format!("SELECT 1 FROM {t} WHERE key_hash = ?1"),
            cull_expired: format!("DELETE FROM {t} WHERE expires_at <= ?1"),
            cull_oldest: format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY id LIMIT ?1)"
            ),
            ttl: format!(
                "SELECT expires_at FROM {t} WHERE key_hash = ?1 AND key = ?2 AND {} AND {}",
                alive("", "?3"),
                valid("")
            ),
            replace: format!(
                "UPDATE {t} SET value = ?3, expires_at = ?4, byte_size = ?5 \
                 WHERE key_hash = ?1 AND key = ?2 AND {} AND {}",
                alive("", "?6"),
                valid("")
            ),
            scan: format!(
                "SELECT id, key FROM {t} WHERE id > ?1 AND CAST(key AS TEXT) GLOB ?2 AND {} \
                 ORDER BY id LIMIT ?3",
                alive("", "?4")
            ),
            // One statement each: the compare and the change happen under the write lock.
            delete_if_equals: format!(
                "DELETE FROM {t} WHERE key_hash = ?1 AND key = ?2 AND CAST(value AS BLOB) = ?3 \
                 AND {} AND {}",
                alive("", "?4"),
                valid("")
            ),
            extend_if_equals: format!(
                "UPDATE {t} SET expires_at = CASE WHEN ?5 THEN ?4 + ?3 ELSE expires_at + ?3 END \
                 WHERE key_hash = ?1 AND key = ?2 AND CAST(value AS BLOB) = ?6 \
                 AND (?5 OR expires_at IS NOT NULL) AND {} AND {}",
                alive("", "?4"),
                valid("")
            ),
            table,
        }
    }

    pub(super) fn get_many(&self, n: usize) -> String {
        format!(
            "SELECT key, value, expires_at, byte_size, id FROM {} WHERE key_hash IN ({})",
            self.table.quoted,
            placeholders(1, n)
        )
    }

    pub(super) fn delete_many(&self, n: usize) -> String {
        format!(
            "DELETE FROM {} WHERE key_hash IN ({}) AND key IN ({}) RETURNING {} AND {}",
            self.table.quoted,
            placeholders(1, n),
            placeholders(n + 1, n),
            alive("", &format!("?{}", 2 * n + 1)),
            valid("")
        )
    }

    pub(super) fn set_many(&self, n: usize) -> String {
        let mut sql = format!(
            "INSERT INTO {} (key_hash, key, value, expires_at, byte_size) VALUES ",
            self.table.quoted
        );
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?)");
        }
        sql.push_str(
            " ON CONFLICT (key_hash) DO UPDATE SET key = excluded.key, value = excluded.value, \
             expires_at = excluded.expires_at, byte_size = excluded.byte_size",
        );
        sql
    }
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
