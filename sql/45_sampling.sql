-- Sampling: Bernoulli samples of a table's rows (orochi.sample) and
-- Horvitz-Thompson estimates with confidence intervals over them
-- (orochi.sampled_sum / sampled_count / sampled_avg); docs/sketches.md.
--
-- A row is sampled when hashint8extended(ordinal, seed), the Postgres hash
-- of its position in the table's scan order, has its low 32 bits below
-- fraction * 2^32.  Heap tables (and any other relation) compute that in
-- SQL over row_number() OVER (); columnar tables compute the same hash in
-- the scan and drop the other rows before they become tuples.  The
-- functions run as the caller (never SECURITY DEFINER): reading the sample
-- needs SELECT on the table.

CREATE FUNCTION orochi.sample_request(oid, float8, integer)
RETURNS boolean AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION orochi.sample_cancel(oid)
RETURNS boolean AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C STRICT VOLATILE;

-- (kind 'sum' | 'count' | 'avg', aggregate state, state from float8_regr_accum?)
-- -> {estimate, lower, upper, standard error, sampled values}
CREATE FUNCTION orochi.sampled_final(text, float8[], boolean)
RETURNS float8[] AS 'MODULE_PATHNAME', 'orochi_py_call' LANGUAGE C IMMUTABLE;

-- The query orochi.sample runs for a relation ($1 = fraction, $2 = seed);
-- for a columnar table it also registers the sample request its scan takes.
CREATE FUNCTION orochi.sample_query(relation regclass, fraction float8, seed integer)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    kind "char";
    wrapper name;
BEGIN
    IF fraction IS NULL OR fraction <= 0 OR fraction > 1 OR fraction = 'NaN'::float8 THEN
        RAISE EXCEPTION 'sampling fraction must be greater than 0 and at most 1, got %',
                        coalesce(fraction::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A fraction of 0.01 samples about 1% of the rows.';
    END IF;
    IF seed IS NULL THEN
        RAISE EXCEPTION 'sampling seed must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The same seed gives the same sample of the same rows.';
    END IF;
    IF relation IS NULL THEN
        RAISE EXCEPTION 'relation to sample must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = relation;
    IF kind IS NULL OR kind NOT IN ('r', 'p', 'm', 'f', 'v') THEN
        RAISE EXCEPTION '"%" is not a table, view or materialized view', relation
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF kind = 'f' THEN
        SELECT w.fdwname INTO wrapper
        FROM pg_catalog.pg_foreign_table t
        JOIN pg_catalog.pg_foreign_server s ON s.oid = t.ftserver
        JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
        WHERE t.ftrelid = relation;
        IF wrapper = 'orochi' THEN
            PERFORM orochi.sample_request(relation, fraction, seed);
            RETURN format('SELECT * FROM %s', relation);
        END IF;
    END IF;
    IF kind IN ('r', 'm') THEN
        -- number only the row addresses, then fetch the sampled rows by
        -- address (a TID scan returns them in the table's order): rows not
        -- sampled never become whole tuples
        RETURN format('SELECT * FROM %1$s WHERE ctid = ANY (ARRAY('
                      'SELECT s.ctid FROM (SELECT ctid, pg_catalog.row_number() OVER () AS n FROM %1$s) s '
                      'WHERE (pg_catalog.hashint8extended(s.n, $2) & 4294967295)::float8 '
                      '< $1 * 4294967296.0))', relation);
    END IF;
    RETURN format('SELECT (s.r).* FROM (SELECT r, pg_catalog.row_number() OVER () AS n FROM %s r) s '
                  'WHERE (pg_catalog.hashint8extended(s.n, $2) & 4294967295)::float8 '
                  '< $1 * 4294967296.0', relation);
END
$$;

-- A Bernoulli sample of the rows of the table whose row type the first
-- argument has: SELECT * FROM orochi.sample(NULL::events, 0.01, 42).
CREATE FUNCTION orochi.sample(relation anyelement, fraction float8, seed integer)
RETURNS SETOF anyelement
LANGUAGE plpgsql VOLATILE
SET max_parallel_workers_per_gather = 0
SET synchronize_seqscans = off
AS $$
DECLARE
    rel regclass;
BEGIN
    SELECT NULLIF(t.typrelid, 0) INTO rel FROM pg_catalog.pg_type t WHERE t.oid = pg_typeof(relation);
    IF rel IS NULL THEN
        RAISE EXCEPTION 'orochi.sample needs a row of the table to sample, got a value of type %',
                        pg_typeof(relation)
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Pass NULL cast to the table''s row type: orochi.sample(NULL::my_table, 0.01, 42).';
    END IF;
    BEGIN
        RETURN QUERY EXECUTE orochi.sample_query(rel, fraction, seed) USING fraction, seed;
    EXCEPTION WHEN OTHERS THEN
        PERFORM orochi.sample_cancel(rel);
        RAISE;
    END;
    PERFORM orochi.sample_cancel(rel);
END
$$;

-- The same by relation name; returns record, so the caller lists the
-- columns: SELECT * FROM orochi.sample('events', 0.01, 42) AS s(id int, v float8).
CREATE FUNCTION orochi.sample(relation regclass, fraction float8, seed integer)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE
SET max_parallel_workers_per_gather = 0
SET synchronize_seqscans = off
AS $$
BEGIN
    BEGIN
        RETURN QUERY EXECUTE orochi.sample_query(relation, fraction, seed) USING fraction, seed;
    EXCEPTION WHEN OTHERS THEN
        PERFORM orochi.sample_cancel(relation);
        RAISE;
    END;
    PERFORM orochi.sample_cancel(relation);
END
$$;

-- ------------------------------------------------------- sampled aggregates

-- What a sampled aggregate returns: the estimate, the bounds of its
-- normal-approximation confidence interval, its standard error, and how
-- many sampled values it rests on.
CREATE TYPE orochi.estimate AS (
    estimate float8,
    lower float8,
    upper float8,
    standard_error float8,
    sampled_values bigint
);

CREATE FUNCTION orochi.sampled_check(fraction float8, confidence float8)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF fraction IS NULL OR fraction <= 0 OR fraction > 1 OR fraction = 'NaN'::float8 THEN
        RAISE EXCEPTION 'sampling fraction must be greater than 0 and at most 1, got %',
                        coalesce(fraction::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the fraction the rows were sampled with.';
    END IF;
    IF confidence IS NULL OR confidence <= 0 OR confidence >= 1 OR confidence = 'NaN'::float8 THEN
        RAISE EXCEPTION 'confidence level must be between 0 and 1 (exclusive), got %',
                        coalesce(confidence::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- State: {non-NULL values n, their sum, the sum of their squared deviations
-- from their mean (Youngs-Cramer, as float8_accum), fraction, confidence}.
CREATE FUNCTION orochi.sampled_accum(state float8[], x float8, fraction float8, confidence float8)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    n float8;
    d float8;
BEGIN
    IF state IS NULL THEN
        PERFORM orochi.sampled_check(fraction, confidence);
        state := ARRAY[0, 0, 0, fraction, confidence]::float8[];
    END IF;
    IF x IS NULL THEN
        RETURN state;
    END IF;
    n := state[1] + 1;
    state[1] := n;
    state[2] := state[2] + x;
    IF n > 1 THEN
        d := x * n - state[2];
        -- below 1e-150 the square would underflow (an error in SQL) and
        -- adds nothing a float8 sum of squares can hold
        IF abs(d) > 1e-150 THEN
            state[3] := state[3] + d * d / (n * (n - 1));
        END IF;
    END IF;
    RETURN state;
END
$$;

-- The two-argument aggregates use Postgres's own float8_regr_accum(state,
-- x, fraction) (as regr_sxx etc.: C, no per-row function call of ours):
-- state {n, sum(fraction), squared deviations of fraction, sum(x), squared
-- deviations of x, cross term}; rows where x or fraction is NULL are left
-- out.  The final functions (Python, orochi_fdw/sketches/sampling.py) check
-- the fraction (the same in every row, in (0, 1]) and compute the estimate
-- and its interval:
--   sum:   sum(x) / f,  variance (1 - f) / f^2 * sum(x^2)
--   count: n / f,       variance (1 - f) / f^2 * n
--   avg:   sum(x) / n,  variance (1 - f) * sum((x - mean)^2) / n^2 (linearized)
CREATE FUNCTION orochi.sampled_estimate(result float8[])
RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN result IS NULL THEN NULL
           ELSE ROW(result[1], result[2], result[3], result[4], result[5]::bigint)::orochi.estimate END
$$;

CREATE FUNCTION orochi.sampled_sum_final(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('sum', $1, false)) $$;
CREATE FUNCTION orochi.sampled_count_final(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('count', $1, false)) $$;
CREATE FUNCTION orochi.sampled_avg_final(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('avg', $1, false)) $$;
CREATE FUNCTION orochi.sampled_sum_final_95(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('sum', $1, true)) $$;
CREATE FUNCTION orochi.sampled_count_final_95(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('count', $1, true)) $$;
CREATE FUNCTION orochi.sampled_avg_final_95(float8[]) RETURNS orochi.estimate LANGUAGE sql IMMUTABLE
AS $$ SELECT orochi.sampled_estimate(orochi.sampled_final('avg', $1, true)) $$;

-- Estimated sum(x) over the whole table from the rows of a sample taken
-- with this fraction (confidence of the interval: 0.95 unless given).
CREATE AGGREGATE orochi.sampled_sum(float8, float8) (
    SFUNC = pg_catalog.float8_regr_accum, STYPE = float8[], INITCOND = '{0,0,0,0,0,0}',
    FINALFUNC = orochi.sampled_sum_final_95);
CREATE AGGREGATE orochi.sampled_sum(float8, float8, float8) (
    SFUNC = orochi.sampled_accum, STYPE = float8[], FINALFUNC = orochi.sampled_sum_final);

-- Estimated count(x) of a numeric x (count(*): sampled_count(1, fraction)).
CREATE AGGREGATE orochi.sampled_count(float8, float8) (
    SFUNC = pg_catalog.float8_regr_accum, STYPE = float8[], INITCOND = '{0,0,0,0,0,0}',
    FINALFUNC = orochi.sampled_count_final_95);
CREATE AGGREGATE orochi.sampled_count(float8, float8, float8) (
    SFUNC = orochi.sampled_accum, STYPE = float8[], FINALFUNC = orochi.sampled_count_final);

-- Estimated avg(x).
CREATE AGGREGATE orochi.sampled_avg(float8, float8) (
    SFUNC = pg_catalog.float8_regr_accum, STYPE = float8[], INITCOND = '{0,0,0,0,0,0}',
    FINALFUNC = orochi.sampled_avg_final_95);
CREATE AGGREGATE orochi.sampled_avg(float8, float8, float8) (
    SFUNC = orochi.sampled_accum, STYPE = float8[], FINALFUNC = orochi.sampled_avg_final);
