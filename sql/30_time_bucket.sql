-- orochi.time_bucket: TimescaleDB's time_bucket, same names, arguments and
-- results.  Written as single SQL expressions so that the planner inlines
-- them (no function call per row).
--
-- * Widths without months: buckets are counted in microseconds from the
--   origin, by default 2000-01-03 00:00 (a Monday), with date_bin; for
--   timestamptz the buckets are computed on the absolute time (UTC), as
--   TimescaleDB does without a time zone argument.  A day is 24 hours.
-- * Widths in months (and years): buckets are counted in calendar months from
--   the origin, by default 2000-01-01; for timestamptz in UTC.  A width may
--   not mix months with days or time.
-- * "offset" shifts the buckets: time_bucket(w, ts - offset) + offset.
-- * Infinite timestamps and dates come back unchanged; NULL gives NULL.
-- * The functions are not declared STRICT: the planner inlines a STRICT SQL
--   function only if its body is strict, and a CASE is not (every operator
--   in the bodies is strict, so NULL still gives NULL).

-- Raises message.  The argument "width" is only there so that the call is not
-- folded to its error while planning a branch that is never taken.
CREATE FUNCTION orochi._time_bucket_error(message text, width anyelement)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = message;
END;
$$;

-- The width in microseconds, checked: positive, and either only months or no months.
CREATE FUNCTION orochi._time_bucket_width_us(bucket_width interval)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN extract(month FROM bucket_width) <> 0 OR extract(year FROM bucket_width) <> 0
        THEN orochi._time_bucket_error('month intervals cannot have day or time component', bucket_width)
    WHEN bucket_width <= interval '0'
        THEN orochi._time_bucket_error('bucket width must be greater than zero', bucket_width)
    ELSE (extract(epoch FROM bucket_width) * 1000000)::bigint
END;

-- Whole months in bucket_width, or NULL if it has none; an error if it mixes.
CREATE FUNCTION orochi._time_bucket_months(bucket_width interval)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width) = 0 THEN NULL
    WHEN extract(day FROM bucket_width) <> 0
         OR extract(epoch FROM bucket_width - make_interval(
                months => (extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width))::int)) <> 0
        THEN orochi._time_bucket_error('month intervals cannot have day or time component', bucket_width)::int
    WHEN extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width) < 0
        THEN orochi._time_bucket_error('bucket width must be greater than zero', bucket_width)::int
    ELSE (extract(year FROM bucket_width) * 12 + extract(month FROM bucket_width))::int
END;

-- Months since year 0 (there is no year 0 in the calendar: 1 BC is year -1).
-- date_part (double precision) rather than extract (numeric): much faster,
-- and exact for whole numbers this small.
CREATE FUNCTION orochi._time_bucket_month_index(t timestamp)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((date_part('year', t) + CASE WHEN date_part('year', t) < 0 THEN 1 ELSE 0 END) * 12
        + date_part('month', t) - 1)::bigint;

-- Start of the bucket of ts (timestamp without time zone), from origin.
-- Without months: date_bin, once the width is checked (the check folds away
-- for a constant width).  With months: origin plus the whole buckets of
-- months before ts.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp, origin timestamp)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_months(bucket_width) IS NULL THEN
        date_bin(CASE WHEN orochi._time_bucket_width_us(bucket_width) > 0 THEN bucket_width END, ts, origin)
    WHEN NOT isfinite(ts) THEN ts
    ELSE
        origin + make_interval(months => (floor(
            (orochi._time_bucket_month_index(ts) - orochi._time_bucket_month_index(origin)
             - CASE WHEN ts < origin + make_interval(months => (orochi._time_bucket_month_index(ts)
                                                                - orochi._time_bucket_month_index(origin))::int)
                    THEN 1 ELSE 0 END)::float8
            / orochi._time_bucket_months(bucket_width)) * orochi._time_bucket_months(bucket_width))::int)
END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts,
    CASE WHEN orochi._time_bucket_months(bucket_width) IS NULL
         THEN timestamp '2000-01-03 00:00:00' ELSE timestamp '2000-01-01 00:00:00' END);

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp, "offset" interval)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts - "offset") + "offset" END;

-- timestamptz: on the absolute time (UTC), whatever the session's time zone.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, origin timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC', origin AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, "offset" interval)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC', "offset") AT TIME ZONE 'UTC';

-- date: the bucket of the date's midnight, as a date.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date, origin date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts::timestamp, origin::timestamp)::date END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts::timestamp)::date END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date, "offset" interval)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts::timestamp, "offset")::date END;

-- integers: floor((ts - offset) / width) * width + offset
CREATE FUNCTION orochi.time_bucket(bucket_width bigint, ts bigint, "offset" bigint DEFAULT 0)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN bucket_width <= 0 THEN orochi._time_bucket_error('bucket width must be greater than zero', bucket_width)
    ELSE (ts - "offset") - ((ts - "offset") % bucket_width)
         - CASE WHEN (ts - "offset") % bucket_width < 0 THEN bucket_width ELSE 0 END + "offset"
END;

CREATE FUNCTION orochi.time_bucket(bucket_width int, ts int, "offset" int DEFAULT 0)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width::bigint, ts::bigint, "offset"::bigint)::int;

CREATE FUNCTION orochi.time_bucket(bucket_width smallint, ts smallint, "offset" smallint DEFAULT 0)
RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width::bigint, ts::bigint, "offset"::bigint)::smallint;
