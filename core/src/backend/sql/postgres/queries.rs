//! The SQL text of the postgres:// backend: every statement once, for both connection kinds.

use crate::backend::sql::TableName;

/// The statements, by index into [`Queries::sql`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Q {
    Get,
    Set,
    Add,
    Delete,
    DeleteIfEquals,
    HasKey,
    Touch,
    Incr,
    DeleteCorrupt,
    GetMany,
    SetMany,
    DeleteMany,
    ClearAll,
    ClearPrefix,
    Count,
    TryLock,
    SweepEnd,
    SweepDelete,
    Sample,
    IdSpan,
    Oldest,
    DeleteUpto,
    HashExists,
    CountRead,
    CullExpired,
    CullOldest,
    Ttl,
    Replace,
    Scan,
    ExtendIfEquals,
}

pub(super) const N_QUERIES: usize = Q::ExtendIfEquals as usize + 1;

fn valid(q: &str) -> String {
    format!("({q}value IS NOT NULL AND {q}byte_size = length({q}key) + length({q}value))")
}

fn alive(q: &str, now: &str) -> String {
    format!("({q}expires_at IS NULL OR {q}expires_at > {now})")
}

pub(super) struct Queries {
    pub(super) table: TableName,
    pub(super) create: String,
    /// The row counter of Django's cull: its table, its first value, its triggers.
    pub(super) count_create: String,
    sql: Vec<String>,
}

impl Queries {
    pub(super) fn new(table: TableName, unlogged: bool) -> Queries {
        let t = &table.quoted;
        let on_conflict = "ON CONFLICT (key_hash) DO UPDATE SET key = EXCLUDED.key, \
             value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, \
             byte_size = EXCLUDED.byte_size";
        let upsert = format!(
            "INSERT INTO {t} AS t (key_hash, key, value, expires_at, byte_size) \
             VALUES ($1, $2, $3, $4, $5) {on_conflict}"
        );
        // The integer the value holds, only evaluated on rows that pass the pattern.
        let sum = "(encode(value, 'escape')::bigint + $3)::text";
        let mut sql = vec![String::new(); N_QUERIES];
        let mut put = |q: Q, s: String| sql[q as usize] = s;
        put(
            Q::Get,
            format!(
                "SELECT id, value, expires_at, byte_size FROM {t} WHERE key_hash = $1 AND key = $2"
            ),
        );
        put(
            Q::Add,
            format!(
                "{upsert} WHERE NOT (t.key = EXCLUDED.key AND {} AND {})",
                alive("t.", "$6"),
                valid("t.")
            ),
        );
        put(Q::Set, upsert);
        put(
            Q::Delete,
            format!(
                "DELETE FROM {t} WHERE key_hash = $1 AND key = $2 RETURNING {} AND {}",
                alive("", "$3"),
                valid("")
            ),
        );
        put(
            Q::DeleteIfEquals,
            format!(
                "DELETE FROM {t} WHERE key_hash = $1 AND key = $2 AND value = $3 AND {} AND {}",
                alive("", "$4"),
                valid("")
            ),
        );
        put(
            Q::HasKey,
            format!(
                "SELECT 1 FROM {t} WHERE key_hash = $1 AND key = $2 AND {} AND {}",
                alive("", "$3"),
                valid("")
            ),
        );
        put(
            Q::Touch,
            format!(
                "UPDATE {t} SET expires_at = $3 WHERE key_hash = $1 AND key = $2 AND {} AND {}",
                alive("", "$4"),
                valid("")
            ),
        );
        // One statement, atomic under the row lock. Only plain decimal (what `parse_i64`
        // accepts) passes the pattern; a refusal or an out-of-range error is classified by
        // reading the row.
        put(
            Q::Incr,
            format!(
                "UPDATE {t} SET value = convert_to({sum}, 'UTF8'), \
                   byte_size = length(key) + octet_length({sum}) \
                 WHERE key_hash = $1 AND key = $2 AND {} AND {} \
                   AND encode(value, 'escape') ~ '^[+-]?[0-9]{{1,20}}$' \
                 RETURNING value",
                alive("", "$4"),
                valid("")
            ),
        );
        put(
            Q::DeleteCorrupt,
            format!("DELETE FROM {t} WHERE id = $1 AND NOT {}", valid("")),
        );
        put(
            Q::GetMany,
            format!(
                "SELECT key, value, expires_at, byte_size, id FROM {t} WHERE key_hash = ANY($1)"
            ),
        );
        put(
            Q::SetMany,
            format!(
                "INSERT INTO {t} AS t (key_hash, key, value, expires_at, byte_size) \
                 SELECT h, k, v, $4::bigint, length(k) + length(v) \
                 FROM unnest($1::bigint[], $2::bytea[], $3::bytea[]) AS u(h, k, v) \
                 {on_conflict}"
            ),
        );
        put(
            Q::DeleteMany,
            format!(
                "DELETE FROM {t} WHERE key_hash = ANY($1) AND key = ANY($2) RETURNING {} AND {}",
                alive("", "$3"),
                valid("")
            ),
        );
        put(Q::ClearAll, format!("DELETE FROM {t}"));
        // Exact and case-sensitive, unlike LIKE, and nothing to escape.
        put(
            Q::ClearPrefix,
            format!("DELETE FROM {t} WHERE substring(key FROM 1 FOR $1) = $2"),
        );
        put(Q::Count, format!("SELECT count(*) FROM {t}"));
        put(
            Q::TryLock,
            "SELECT pg_try_advisory_xact_lock($1)".to_owned(),
        );
        put(
            Q::SweepEnd,
            format!(
                "SELECT max(id) FROM (SELECT id FROM {t} WHERE id > $1 ORDER BY id LIMIT $2) s"
            ),
        );
        put(
            Q::SweepDelete,
            format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} \
                 WHERE id > $1 AND id <= $2 AND expires_at <= $3 FOR UPDATE SKIP LOCKED)"
            ),
        );
        put(
            Q::Sample,
            format!("SELECT key_hash, byte_size FROM {t} ORDER BY key_hash DESC LIMIT $1"),
        );
        put(Q::IdSpan, format!("SELECT min(id), max(id) FROM {t}"));
        put(
            Q::Oldest,
            format!("SELECT id, byte_size FROM {t} WHERE id > $1 ORDER BY id LIMIT $2"),
        );
        // Trimming skips rows other statements hold: it never waits on a lock, so it cannot
        // deadlock with a set_many (what it skips, the next pass deletes).
        put(
            Q::DeleteUpto,
            format!(
                "DELETE FROM {t} WHERE id IN \
                 (SELECT id FROM {t} WHERE id <= $1 FOR UPDATE SKIP LOCKED)"
            ),
        );
        let ct = &table.count_table;
        put(
            Q::HashExists,
            format!("SELECT 1 FROM {t} WHERE key_hash = $1"),
        );
        // FOR UPDATE: writers of new keys take turns, so the count they act on is exact.
        put(
            Q::CountRead,
            format!("SELECT n FROM {ct} WHERE id = 0 FOR UPDATE"),
        );
        // SKIP LOCKED: a row another writer holds is that writer's to finish; waiting for it
        // while holding the counter row could deadlock with that writer's count trigger.
        put(
            Q::CullExpired,
            format!(
                "DELETE FROM {t} WHERE id IN \
                 (SELECT id FROM {t} WHERE expires_at <= $1 FOR UPDATE SKIP LOCKED)"
            ),
        );
        put(
            Q::CullOldest,
            format!(
                "DELETE FROM {t} WHERE id IN \
                 (SELECT id FROM {t} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            ),
        );
        put(
            Q::Ttl,
            format!(
                "SELECT expires_at FROM {t} WHERE key_hash = $1 AND key = $2 AND {} AND {}",
                alive("", "$3"),
                valid("")
            ),
        );
        put(
            Q::Replace,
            format!(
                "UPDATE {t} SET value = $3, expires_at = $4, byte_size = $5 \
                 WHERE key_hash = $1 AND key = $2 AND {} AND {}",
                alive("", "$6"),
                valid("")
            ),
        );
        // A page of keys/iter_keys: `$2` is KeyPattern::to_like (escape `\`, bytea LIKE
        // compares bytes, case-sensitive); the pattern itself decides classes.
        put(
            Q::Scan,
            format!(
                "SELECT id, key FROM {t} WHERE id > $1 AND key LIKE $2 AND {} \
                 ORDER BY id LIMIT $3",
                alive("", "$4")
            ),
        );
        // One statement, atomic under the row lock: a lock's extend and reacquire.
        put(
            Q::ExtendIfEquals,
            format!(
                "UPDATE {t} SET expires_at = CASE WHEN $5 THEN $4 + $3 ELSE expires_at + $3 END \
                 WHERE key_hash = $1 AND key = $2 AND value = $6 \
                 AND ($5 OR expires_at IS NOT NULL) AND {} AND {}",
                alive("", "$4"),
                valid("")
            ),
        );
        // Run under the creation lock, with the cache table locked against writes so that
        // no row comes or goes between the count and the triggers that keep it. Statement
        // triggers over transition tables: one counter update per statement, not per row.
        let stem = &table.count_stem;
        let count_create = format!(
            "CREATE TABLE IF NOT EXISTS {ct} (\
               id INTEGER PRIMARY KEY CHECK (id = 0), n BIGINT NOT NULL); \
             LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE; \
             INSERT INTO {ct} (id, n) SELECT 0, count(*) FROM {t} ON CONFLICT (id) DO NOTHING; \
             CREATE OR REPLACE FUNCTION {ct}() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF TG_OP = 'INSERT' THEN \
                 UPDATE {ct} SET n = n + (SELECT count(*) FROM polycache_rows) WHERE id = 0; \
               ELSE \
                 UPDATE {ct} SET n = n - (SELECT count(*) FROM polycache_rows) WHERE id = 0; \
               END IF; \
               RETURN NULL; \
             END $$; \
             DROP TRIGGER IF EXISTS \"{stem}_insert\" ON {t}; \
             CREATE TRIGGER \"{stem}_insert\" AFTER INSERT ON {t} \
               REFERENCING NEW TABLE AS polycache_rows \
               FOR EACH STATEMENT EXECUTE FUNCTION {ct}(); \
             DROP TRIGGER IF EXISTS \"{stem}_delete\" ON {t}; \
             CREATE TRIGGER \"{stem}_delete\" AFTER DELETE ON {t} \
               REFERENCING OLD TABLE AS polycache_rows \
               FOR EACH STATEMENT EXECUTE FUNCTION {ct}();"
        );
        let create = format!(
            "CREATE {}TABLE IF NOT EXISTS {t} (\
               id BIGSERIAL PRIMARY KEY, \
               key_hash BIGINT NOT NULL, \
               key BYTEA NOT NULL, \
               value BYTEA NOT NULL, \
               expires_at BIGINT, \
               byte_size BIGINT NOT NULL); \
             CREATE UNIQUE INDEX IF NOT EXISTS {} ON {t} (key_hash);",
            if unlogged { "UNLOGGED " } else { "" },
            table.index
        );
        Queries {
            table,
            create,
            count_create,
            sql,
        }
    }

    /// The text of statement `q`.
    pub(super) fn sql(&self, q: Q) -> &str {
        &self.sql[q as usize]
    }
}
