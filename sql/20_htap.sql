-- HTAP writes on columnar tables: delete bitmaps, the delta store, compaction,
-- vacuum of stripes and its progress (docs/htap.md).

-- Each stripe's deleted rows: a roaring bitmap (pyroaring's portable format)
-- of row offsets in the stripe, NULL while nothing is deleted.  UPDATE and
-- DELETE change it under a row lock on the stripe's row (SELECT ... FOR
-- UPDATE), so concurrent deleters of one stripe take turns and never lose
-- each other's deletions; readers see it through their snapshot like any row.
ALTER TABLE orochi.columnar_stripes
    ADD COLUMN deleted_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN delete_bitmap bytea;

-- Ids of delta rows (never reused): a delta row's row id is 2^46 + its id.
CREATE SEQUENCE orochi.columnar_delta_rowid_seq;

-- Stripe files replaced by orochi.vacuum(regclass): their rows are gone, but a
-- snapshot taken before that vacuum committed may still read them.  The file
-- is removed once no backend's snapshot is that old (at the next vacuum).
CREATE TABLE orochi.columnar_retired_files (
    file_path     text PRIMARY KEY,             -- as in columnar_stripes (orochi._file_path)
    relid         oid NOT NULL,
    stripe_id     bigint NOT NULL,
    file_bytes    bigint NOT NULL,
    retired_xid   xid8 NOT NULL,              -- the vacuum that replaced it
    retired_at    timestamptz NOT NULL DEFAULT now()
);

-- Fold the delta store of an orochi table into stripes, in the caller's
-- transaction.  Returns the rows moved and the stripes written.
CREATE FUNCTION orochi.compact(rel regclass, OUT moved_rows bigint, OUT stripes_written bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Rewrite the stripes of an orochi table whose deleted fraction is at least
-- min_deleted_fraction (dropping deleted rows), and remove the files of
-- earlier rewrites that no snapshot can read any more.
CREATE FUNCTION orochi.vacuum(rel regclass, min_deleted_fraction float8 DEFAULT 0.2,
                              OUT stripes_rewritten bigint, OUT rows_removed bigint,
                              OUT bytes_before bigint, OUT bytes_after bigint,
                              OUT removed_files bigint, OUT removed_bytes bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

-- Progress of the compactions and vacuums running now, one row each.
CREATE FUNCTION orochi.maintenance_progress(
    OUT pid integer, OUT command text, OUT table_name regclass, OUT phase text,
    OUT stripes_done bigint, OUT stripes_total bigint, OUT rows_done bigint,
    OUT started_at timestamptz, OUT updated_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;

CREATE VIEW orochi.vacuum_progress AS
SELECT * FROM orochi.maintenance_progress();

-- Rows and bytes of each orochi table's delta store.
CREATE FUNCTION orochi.delta_size(rel regclass, OUT delta_rows bigint, OUT delta_bytes bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT VOLATILE;

GRANT SELECT ON orochi.vacuum_progress TO PUBLIC;
