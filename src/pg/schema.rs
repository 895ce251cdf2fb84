//! The PostgreSQL schema and its versioned migrations, embedded in the binary.
//!
//! `schema_version` holds one row per applied migration. At start the server
//! applies, in one transaction under an advisory lock (so that two nodes
//! starting together do not both migrate), every migration the database lacks;
//! a database whose version is newer than the newest this binary knows is
//! refused, naming both versions: an older binary must not write to a log whose
//! rules it does not know.

use super::PgError;

/// One migration: its version (dense from 1), what it does, its SQL.
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Never edit a released one: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    description:
        "the log: leader lease, events, bundles, bundle artifact references; append-only triggers",
    sql: r#"
CREATE TABLE leader (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);
INSERT INTO leader (id, epoch, holder, expires_at) VALUES (1, 0, '', '-infinity');

CREATE TABLE events (
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    event_id text NOT NULL UNIQUE,
    bundle_id text NOT NULL,
    event_type text NOT NULL,
    target text NOT NULL,
    record bytea NOT NULL,
    prev_hash bytea CHECK (prev_hash IS NULL OR length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (length(hash) = 32),
    epoch bigint NOT NULL
);
CREATE INDEX events_by_bundle ON events (bundle_id, seq);
CREATE INDEX events_by_type ON events (event_type, seq);

CREATE TABLE bundles (
    bundle_id text PRIMARY KEY,
    digest bytea NOT NULL CHECK (length(digest) = 32),
    first_seq bigint,
    last_seq bigint,
    ingested bigint NOT NULL,
    duplicates bigint NOT NULL,
    head_seq bigint NOT NULL
);
CREATE INDEX bundles_by_head ON bundles (head_seq);

CREATE TABLE bundle_artifacts (
    bundle_id text NOT NULL REFERENCES bundles (bundle_id),
    ord integer NOT NULL,
    sha256 bytea NOT NULL CHECK (length(sha256) = 32),
    kind text NOT NULL,
    uri text NOT NULL,
    size bigint NOT NULL,
    PRIMARY KEY (bundle_id, ord)
);

CREATE FUNCTION leviathan_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'leviathan: % on % is refused: the log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER bundles_append_only BEFORE UPDATE OR DELETE ON bundles
    FOR EACH ROW EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER bundles_no_truncate BEFORE TRUNCATE ON bundles
    FOR EACH STATEMENT EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER bundle_artifacts_append_only BEFORE UPDATE OR DELETE ON bundle_artifacts
    FOR EACH ROW EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER bundle_artifacts_no_truncate BEFORE TRUNCATE ON bundle_artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION leviathan_append_only();
"#,
    },
    Migration {
        version: 2,
        description: "cluster members: each node's applied seq, state digest and projector set",
        sql: r#"
CREATE TABLE members (
    node_id text PRIMARY KEY,
    role text NOT NULL,
    applied_seq bigint NOT NULL,
    state_digest bytea NOT NULL CHECK (length(state_digest) = 32),
    fingerprint bytea NOT NULL CHECK (length(fingerprint) = 32),
    updated_at timestamptz NOT NULL
);
"#,
    },
    Migration {
        version: 3,
        description: "artifacts: metadata rows and their blobs in 1 MiB bytea chunks; append-only",
        sql: r#"
CREATE TABLE artifacts (
    sha256 bytea PRIMARY KEY CHECK (length(sha256) = 32),
    size bigint NOT NULL CHECK (size >= 0),
    chunks integer NOT NULL CHECK (chunks >= 1),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE artifact_chunks (
    sha256 bytea NOT NULL CHECK (length(sha256) = 32),
    ord integer NOT NULL CHECK (ord >= 0),
    data bytea NOT NULL,
    PRIMARY KEY (sha256, ord)
);
CREATE TRIGGER artifacts_append_only BEFORE UPDATE OR DELETE ON artifacts
    FOR EACH ROW EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER artifacts_no_truncate BEFORE TRUNCATE ON artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER artifact_chunks_append_only BEFORE UPDATE OR DELETE ON artifact_chunks
    FOR EACH ROW EXECUTE FUNCTION leviathan_append_only();
CREATE TRIGGER artifact_chunks_no_truncate BEFORE TRUNCATE ON artifact_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION leviathan_append_only();
"#,
    },
    Migration {
        version: 4,
        description: "cluster members: the process that holds each node id",
        sql: r#"
ALTER TABLE members ADD COLUMN instance text NOT NULL DEFAULT '';
"#,
    },
    Migration {
        version: 5,
        description: "replication lag and redirects: each event's commit time, each member's advertised URL",
        // `committed_at` is the appending transaction's time (`now()`: its
        // start, a few milliseconds before its commit); rows older than the
        // migration get the migration's time. Adding a column with a
        // non-volatile default rewrites nothing, and fires no UPDATE trigger.
        sql: r#"
ALTER TABLE events ADD COLUMN committed_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE members ADD COLUMN advertise_url text;
"#,
    },
    Migration {
        version: 6,
        description: "the append in one statement: leviathan_append checks the lease and the head, \
                      inserts the batch and notifies; the unused event indexes by bundle and type dropped",
        // The writer calls it as one prepared statement outside an explicit
        // transaction (its own transaction: one round trip per batch instead
        // of eight, each prepared again). The fencing is the same as the
        // client-side checks it replaces: the lease row is locked, its epoch
        // must be the caller's, the stored head must be the expected one;
        // a refusal raises LVFEN (message: the current epoch, detail: its
        // holder) or LVHED (message: the stored head seq, detail: its hash in
        // hex, or `empty`). Nothing reads events by bundle or by type in
        // PostgreSQL (every node serves those routes from its local store),
        // so those two indexes only cost each insert.
        sql: r#"
DROP INDEX events_by_bundle;
DROP INDEX events_by_type;
CREATE FUNCTION leviathan_append(
    p_epoch bigint, p_expected_seq bigint, p_expected_hash bytea, p_head text,
    e_seq int8[], e_id text[], e_bundle text[], e_type text[], e_target text[],
    e_record bytea[], e_prev bytea[], e_hash bytea[],
    b_id text[], b_digest bytea[], b_first int8[], b_last int8[], b_ingested int8[],
    b_dups int8[], b_head int8[],
    a_bundle text[], a_ord int4[], a_sha bytea[], a_kind text[], a_uri text[], a_size int8[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_epoch bigint;
    v_holder text;
    v_seq bigint;
    v_hash bytea;
BEGIN
    SELECT l.epoch, l.holder INTO v_epoch, v_holder FROM leader l WHERE l.id = 1 FOR UPDATE;
    IF p_epoch = 0 OR v_epoch IS DISTINCT FROM p_epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'LVFEN', MESSAGE = coalesce(v_epoch, 0)::text,
            DETAIL = coalesce(v_holder, '');
    END IF;
    SELECT e.seq, e.hash INTO v_seq, v_hash FROM events e ORDER BY e.seq DESC LIMIT 1;
    IF coalesce(v_seq, 0) <> p_expected_seq OR v_hash IS DISTINCT FROM p_expected_hash THEN
        RAISE EXCEPTION USING ERRCODE = 'LVHED', MESSAGE = coalesce(v_seq, 0)::text,
            DETAIL = coalesce(encode(v_hash, 'hex'), 'empty');
    END IF;
    IF cardinality(e_seq) > 0 THEN
        INSERT INTO events (seq, event_id, bundle_id, event_type, target, record, prev_hash, hash, epoch)
        SELECT s, i, b, t, g, r, p, h, p_epoch
          FROM unnest(e_seq, e_id, e_bundle, e_type, e_target, e_record, e_prev, e_hash)
            AS u(s, i, b, t, g, r, p, h);
    END IF;
    IF cardinality(b_id) > 0 THEN
        INSERT INTO bundles (bundle_id, digest, first_seq, last_seq, ingested, duplicates, head_seq)
        SELECT * FROM unnest(b_id, b_digest, b_first, b_last, b_ingested, b_dups, b_head);
    END IF;
    IF cardinality(a_bundle) > 0 THEN
        INSERT INTO bundle_artifacts (bundle_id, ord, sha256, kind, uri, size)
        SELECT * FROM unnest(a_bundle, a_ord, a_sha, a_kind, a_uri, a_size);
    END IF;
    PERFORM pg_notify('leviathan_log', p_head);
END
$$;
"#,
    },
];

/// The newest schema version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Serializes migrations between nodes (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x4c45_5649_4154_0001;

/// Brings the database to [`latest`]; returns (version found, version now).
pub fn migrate(client: &mut postgres::Client) -> Result<(i32, i32), PgError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
        .get(0);
    if found > latest() {
        return Err(PgError::NewerSchema {
            database: found,
            binary: latest(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql)
            .map_err(|e| PgError::Migration(m.version, e))?;
        tx.execute(
            "INSERT INTO schema_version (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )?;
        tracing::info!(
            version = m.version,
            "applied PostgreSQL migration: {}",
            m.description
        );
    }
    tx.commit()?;
    Ok((found, latest()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dense_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.description);
        }
        assert_eq!(latest() as usize, MIGRATIONS.len());
    }
}
