-- Sketches: HyperLogLog distinct counts and t-digest percentiles
-- (docs/sketches.md).
--
-- orochi.hll and orochi.tdigest are domains over bytea: a sketch is stored,
-- copied, dumped and restored as its documented serialized bytes with no C
-- type (input/output/send/receive functions) to maintain, and the domain's
-- CHECK validates a value when it becomes a sketch.  The Python functions
-- take and return plain bytea; the typed functions users call are SQL
-- wrappers around them.

CREATE FUNCTION orochi.sketch_check_hll(bytea)
RETURNS boolean
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_check_tdigest(bytea)
RETURNS boolean
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE DOMAIN orochi.hll AS bytea CHECK (orochi.sketch_check_hll(VALUE));
CREATE DOMAIN orochi.tdigest AS bytea CHECK (orochi.sketch_check_tdigest(VALUE));

-- ----------------------------------------------------------- scalar functions

CREATE FUNCTION orochi.sketch_hll_cardinality(bytea)
RETURNS bigint
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_hll_union(bytea, bytea)
RETURNS bytea
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_tdigest_percentile(bytea, float8)
RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_tdigest_percentile(bytea, float8[])
RETURNS float8[]
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

CREATE FUNCTION orochi.sketch_tdigest_count(bytea)
RETURNS float8
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C STRICT IMMUTABLE;

-- Estimated distinct values of a sketch (exact while it is sparse).
CREATE FUNCTION orochi.hll_cardinality(orochi.hll)
RETURNS bigint
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_hll_cardinality($1::bytea) $$;

-- The union of two sketches, at the lower of their precisions.
CREATE FUNCTION orochi.hll_union(orochi.hll, orochi.hll)
RETURNS orochi.hll
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_hll_union($1::bytea, $2::bytea)::orochi.hll $$;

-- The estimated q-quantile (0 <= q <= 1) of the values a digest summarizes.
CREATE FUNCTION orochi.tdigest_percentile(orochi.tdigest, float8)
RETURNS float8
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_tdigest_percentile($1::bytea, $2) $$;

CREATE FUNCTION orochi.tdigest_percentile(orochi.tdigest, float8[])
RETURNS float8[]
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_tdigest_percentile($1::bytea, $2) $$;

-- How many values a digest summarizes.
CREATE FUNCTION orochi.tdigest_count(orochi.tdigest)
RETURNS float8
LANGUAGE sql STRICT IMMUTABLE
AS $$ SELECT orochi.sketch_tdigest_count($1::bytea) $$;

-- ------------------------------------------------- aggregate support functions
-- The state is a token naming a builder in the backend's Python (see
-- orochi_fdw/sketches/sqlapi.py).  hll_agg, approx_count_distinct,
-- tdigest_agg and approx_percentile keep it as an internal state: a bytea in
-- the aggregate's memory context, NULL until the first non-NULL row, whose
-- transition function (orochi_sketch_trans, pgext/sketch_agg.c) keeps values
-- of the common fixed-size types beside the token and hands them to the
-- builder in batches.  Being internal, it has serialization functions, and
-- with the combine functions these aggregates run in parallel (Partial and
-- Finalize Aggregate): a worker's state travels as the sketch (HLL) or the
-- values (t-digest), so the result is the serial one, byte for byte.  The
-- union aggregates keep a bytea state.  The final functions consume the
-- builder (FINALFUNC_MODIFY = READ_WRITE, so Postgres never shares a state
-- between two aggregates).

CREATE FUNCTION orochi.sketch_hll_trans(internal, anyelement)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_hll_trans(internal, anyelement, integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_tdigest_trans(internal, float8)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_tdigest_trans(internal, float8, integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8, integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8[])
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_trans(internal, float8, float8[], integer)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_trans' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION orochi.sketch_hll_final(internal)
RETURNS orochi.hll AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_hll_count_final(internal)
RETURNS bigint AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_tdigest_final(internal)
RETURNS orochi.tdigest AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentile_final(internal)
RETURNS float8 AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_percentiles_final(internal)
RETURNS float8[] AS 'MODULE_PATHNAME', 'orochi_sketch_final' LANGUAGE C VOLATILE PARALLEL SAFE;

-- Parallel aggregation: a worker's state as bytes and back, and two states
-- made one (the second's builder folded into the first's).
CREATE FUNCTION orochi.sketch_serialize(internal)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_sketch_serialize' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_deserialize(bytea, internal)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_deserialize' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
CREATE FUNCTION orochi.sketch_combine(internal, internal)
RETURNS internal AS 'MODULE_PATHNAME', 'orochi_sketch_combine' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION orochi.sketch_hll_union_trans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_union_trans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.sketch_hll_final(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_final(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;

CREATE FUNCTION orochi.sketch_hll_agg_final(bytea)
RETURNS orochi.hll LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_hll_final($1)::orochi.hll $$;
CREATE FUNCTION orochi.sketch_tdigest_agg_final(bytea)
RETURNS orochi.tdigest LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_tdigest_final($1)::orochi.tdigest $$;

-- Moving-aggregate forms, used when the aggregates run as window functions
-- (PostgreSQL then always uses them: the plain final functions consume their
-- state).  The state names a window builder that keeps the frame's rows;
-- the inverse functions take the oldest row out; the final functions leave
-- the state as it is, since they may run once per row of the window.
CREATE FUNCTION orochi.sketch_hll_mtrans(bytea, anyelement)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_mtrans(bytea, anyelement, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_minv(bytea, anyelement)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_minv(bytea, anyelement, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_union_mtrans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_hll_union_minv(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_mtrans(bytea, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_mtrans(bytea, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_minv(bytea, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_minv(bytea, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_union_mtrans(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_union_minv(bytea, bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8[])
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mtrans(bytea, float8, float8[], integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8, integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8[])
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_minv(bytea, float8, float8[], integer)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.sketch_hll_mfinal(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_hll_count_mfinal(bytea)
RETURNS bigint AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_tdigest_mfinal(bytea)
RETURNS bytea AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_percentile_mfinal(bytea)
RETURNS float8 AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_percentiles_mfinal(bytea)
RETURNS float8[] AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;
CREATE FUNCTION orochi.sketch_hll_agg_mfinal(bytea)
RETURNS orochi.hll LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_hll_mfinal($1)::orochi.hll $$;
CREATE FUNCTION orochi.sketch_tdigest_agg_mfinal(bytea)
RETURNS orochi.tdigest LANGUAGE sql VOLATILE
AS $$ SELECT orochi.sketch_tdigest_mfinal($1)::orochi.tdigest $$;

-- How many sketch aggregate states this backend's Python keeps (the states
-- of aggregates that are over are dropped first).
CREATE FUNCTION orochi.sketch_open_states()
RETURNS bigint AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C VOLATILE;

-- ------------------------------------------------------------------ aggregates

-- A HyperLogLog sketch of the non-NULL values (precision 4..18, default 14).
CREATE AGGREGATE orochi.hll_agg(anyelement) (
    SFUNC = orochi.sketch_hll_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_hll_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE AGGREGATE orochi.hll_agg(anyelement, integer) (
    SFUNC = orochi.sketch_hll_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_hll_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- The union of sketches, at the lowest of their precisions.
CREATE AGGREGATE orochi.hll_union_agg(orochi.hll) (
    SFUNC = orochi.sketch_hll_union_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_hll_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_hll_union_mtrans, MINVFUNC = orochi.sketch_hll_union_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- Estimated count(DISTINCT x): 0.81% standard error at the default p = 14.
CREATE AGGREGATE orochi.approx_count_distinct(anyelement) (
    SFUNC = orochi.sketch_hll_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_hll_count_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_count_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE AGGREGATE orochi.approx_count_distinct(anyelement, integer) (
    SFUNC = orochi.sketch_hll_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_hll_count_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_hll_mtrans, MINVFUNC = orochi.sketch_hll_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_hll_count_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- A t-digest of the finite values (compression 10..10000, default 100).
CREATE AGGREGATE orochi.tdigest_agg(float8) (
    SFUNC = orochi.sketch_tdigest_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_tdigest_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_tdigest_mtrans, MINVFUNC = orochi.sketch_tdigest_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_tdigest_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE AGGREGATE orochi.tdigest_agg(float8, integer) (
    SFUNC = orochi.sketch_tdigest_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_tdigest_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_tdigest_mtrans, MINVFUNC = orochi.sketch_tdigest_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_tdigest_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- The union of digests.
CREATE AGGREGATE orochi.tdigest_union_agg(orochi.tdigest) (
    SFUNC = orochi.sketch_tdigest_union_trans, STYPE = bytea, INITCOND = '',
    FINALFUNC = orochi.sketch_tdigest_agg_final, FINALFUNC_MODIFY = READ_WRITE,
    MSFUNC = orochi.sketch_tdigest_union_mtrans, MINVFUNC = orochi.sketch_tdigest_union_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_tdigest_agg_mfinal, MFINALFUNC_MODIFY = READ_ONLY);

-- Estimated percentile_cont(q) WITHIN GROUP (ORDER BY value), 0 <= q <= 1,
-- and the array form for several quantiles.
CREATE AGGREGATE orochi.approx_percentile(float8, float8) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_percentile_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentile_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE AGGREGATE orochi.approx_percentile(float8, float8, integer) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_percentile_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentile_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE AGGREGATE orochi.approx_percentile(float8, float8[]) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_percentiles_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentiles_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
CREATE AGGREGATE orochi.approx_percentile(float8, float8[], integer) (
    SFUNC = orochi.sketch_percentile_trans, STYPE = internal,
    FINALFUNC = orochi.sketch_percentiles_final, FINALFUNC_MODIFY = READ_WRITE,
    COMBINEFUNC = orochi.sketch_combine, SERIALFUNC = orochi.sketch_serialize,
    DESERIALFUNC = orochi.sketch_deserialize, PARALLEL = SAFE,
    MSFUNC = orochi.sketch_percentile_mtrans, MINVFUNC = orochi.sketch_percentile_minv, MSTYPE = bytea, MINITCOND = '',
    MFINALFUNC = orochi.sketch_percentiles_mfinal, MFINALFUNC_MODIFY = READ_ONLY);
