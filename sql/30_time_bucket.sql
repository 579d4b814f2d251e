-- orochi.time_bucket: TimescaleDB's time_bucket, same names, arguments and
-- results.  Written as single SQL expressions so that the planner inlines
-- them (no function call per row).
--
-- * Widths without months: buckets are counted in microseconds from the
--   origin, by default 2000-01-03 00:00 (a Monday), with date_bin; for
--   timestamptz the buckets are computed on the absolute time (UTC), as
--   TimescaleDB does without a time zone argument.  A day is 24 hours.
-- * Widths in months (and years): buckets start on the first of a month at
--   00:00 and are counted in calendar months from the month of the origin's
--   date (the origin's day and time do not count, as in TimescaleDB), by
--   default 2000-01-01; for timestamptz in UTC.  A width may not mix months
--   with days or time.
-- * "offset" shifts the buckets: time_bucket(w, ts - offset) + offset.
-- * dates: widths and offsets of whole days (or months); anything finer is
--   refused, as TimescaleDB refuses it.
-- * time_bucket(width, ts timestamptz, timezone text [, origin, "offset"]):
--   buckets of the wall clock in that time zone (see below).
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

-- Raises message with SQLSTATE 0A000 (feature_not_supported), as
-- TimescaleDB does for the widths and offsets of dates it does not take.
CREATE FUNCTION orochi._time_bucket_unsupported(message text, width anyelement)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = message;
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
-- for a constant width).  With months: the first of the month whose index
-- (months since year 0) is a whole number of buckets away from the index of
-- the origin's month; 2000-01-01 is month 24000.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamp, origin timestamp)
RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_months(bucket_width) IS NULL THEN
        date_bin(CASE WHEN orochi._time_bucket_width_us(bucket_width) > 0 THEN bucket_width END, ts, origin)
    WHEN origin IS NULL THEN NULL
    WHEN NOT isfinite(ts) THEN ts
    ELSE
        timestamp '2000-01-01 00:00:00' + make_interval(months => (
            floor((orochi._time_bucket_month_index(ts) - orochi._time_bucket_month_index(origin))::float8
                  / orochi._time_bucket_months(bucket_width)) * orochi._time_bucket_months(bucket_width)
            + orochi._time_bucket_month_index(origin) - 24000)::int)
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
RETURN CASE WHEN "offset" IS NULL THEN NULL
            WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(bucket_width, ts - "offset") + "offset" END;

-- timestamptz plus an interval as PostgreSQL adds them (days and months in
-- the session's time zone), which is how TimescaleDB applies the offsets of
-- timestamptz buckets and moves a bucket start back.  Declared immutable as
-- TimescaleDB's time_bucket is; written in PL/pgSQL so that the planner does
-- not look inside.  COST 1: an argument holding a call of it stays cheap
-- enough for the planner to inline the SQL functions around it.
CREATE FUNCTION orochi._time_bucket_tstz_add(ts timestamptz, delta interval)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE COST 1
AS $$
BEGIN
    RETURN ts + delta;
END;
$$;

-- Whether an interval has no days, months or years: adding it to a
-- timestamptz does not depend on the time zone.
CREATE FUNCTION orochi._time_bucket_is_time(delta interval)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN extract(day FROM delta) = 0 AND extract(month FROM delta) = 0 AND extract(year FROM delta) = 0;

-- timestamptz: on the absolute time (UTC), whatever the session's time zone.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, origin timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC', origin AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

-- An offset with days or months is taken off and added back as PostgreSQL
-- adds intervals to timestamptz (in the session's time zone), as TimescaleDB
-- does; without, on the UTC clock (the same thing).
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, "offset" interval)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_is_time("offset") THEN
        orochi.time_bucket(bucket_width, ts AT TIME ZONE 'UTC', "offset") AT TIME ZONE 'UTC'
    WHEN "offset" IS NULL THEN NULL
    WHEN NOT isfinite(ts) THEN ts
    ELSE orochi._time_bucket_tstz_add(
        orochi.time_bucket(bucket_width, orochi._time_bucket_tstz_add(ts, - "offset")), "offset")
END;

-- date: the bucket of the date's midnight, as a date.  A width must be whole
-- months or whole days; an offset whole days (TimescaleDB's errors, SQLSTATE
-- 0A000).

-- The width of a date bucket, checked.
CREATE FUNCTION orochi._time_bucket_date_width(bucket_width interval)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_months(bucket_width) IS NOT NULL THEN bucket_width
    WHEN extract(epoch FROM bucket_width) < 86400
        THEN bucket_width + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must not have sub-day precision', bucket_width))
    WHEN extract(epoch FROM bucket_width) % 86400 <> 0
        THEN bucket_width + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must be a multiple of a day', bucket_width))
    ELSE bucket_width
END;

-- The offset of a date bucket, checked: whole days (of either sign).
CREATE FUNCTION orochi._time_bucket_date_offset("offset" interval)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN "offset" IS NULL THEN NULL
    WHEN extract(year FROM "offset") <> 0 OR extract(month FROM "offset") <> 0
        THEN "offset" + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval defined in terms of month, year, century etc. not supported', "offset"))
    WHEN extract(epoch FROM "offset") % 86400 = 0 THEN "offset"
    WHEN abs(extract(epoch FROM "offset")) < 86400
        THEN "offset" + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must not have sub-day precision', "offset"))
    ELSE "offset" + make_interval(secs => orochi._time_bucket_unsupported(
                 'interval must be a multiple of a day', "offset"))
END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date, origin date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN origin IS NULL THEN NULL
            WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(orochi._time_bucket_date_width(bucket_width), ts::timestamp,
                                    origin::timestamp)::date END;

CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(orochi._time_bucket_date_width(bucket_width), ts::timestamp)::date END;

-- The offset is checked even for an infinite date, as TimescaleDB does.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts date, "offset" interval)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN orochi._time_bucket_date_offset("offset") IS NULL THEN NULL
            WHEN NOT isfinite(ts) THEN ts
            ELSE orochi.time_bucket(orochi._time_bucket_date_width(bucket_width), ts::timestamp,
                                    orochi._time_bucket_date_offset("offset"))::date END;

-- timestamptz in a time zone: TimescaleDB's
-- time_bucket(width, ts, timezone [, origin] [, "offset"]).  The time (less
-- the offset) is read as the wall clock in the time zone, bucketed there (the
-- origin read in the same zone; months from the month of its date there),
-- and the bucket's start turned back into an absolute time; where that wall
-- clock time happens twice or not at all (daylight saving), PostgreSQL's
-- reading (the later instant) can fall after the time itself, and then the
-- start moves back by whole widths until it does not.  The offset is taken
-- off before and added back after, on the absolute time, as timestamptz
-- arithmetic does it (an offset with days or months, like a width with days
-- when a start moves back, counts them in the session's time zone: as in
-- TimescaleDB, the result then depends on the TimeZone setting).  origin
-- and "offset" may be NULL (not given); NULL width, time or time zone give
-- NULL.

-- Move r back by whole widths until it is not after t.
CREATE FUNCTION orochi._time_bucket_tz_back(r timestamptz, t timestamptz, bucket_width interval)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF r > t AND orochi._time_bucket_is_time(bucket_width) THEN
        -- all the widths at once: they are fixed numbers of microseconds
        r := r - bucket_width * ceil(extract(epoch FROM r - t) / extract(epoch FROM bucket_width));
    END IF;
    WHILE r > t LOOP
        r := r - bucket_width;
    END LOOP;
    RETURN r;
END;
$$;

-- The start of the bucket of t on the time zone's wall clock, as an
-- absolute time (PostgreSQL's reading of that wall clock time).
CREATE FUNCTION orochi._time_bucket_tz_start(bucket_width interval, t timestamptz, timezone text,
                                             origin timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN timezone(timezone, CASE WHEN origin IS NULL THEN orochi.time_bucket(bucket_width, timezone(timezone, t))
                               ELSE orochi.time_bucket(bucket_width, timezone(timezone, t), timezone(timezone, origin))
                          END);

-- The bucket of t in the time zone, without offset: the start, moved back if
-- it is after t (rare: only around daylight saving changes; the common case
-- stays an inlined expression, the start written out where it is used so
-- that the planner inlines it whatever the width).
CREATE FUNCTION orochi._time_bucket_tz(bucket_width interval, t timestamptz, timezone text,
                                       origin timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN orochi._time_bucket_tz_start(bucket_width, t, timezone, origin) <= t
        THEN orochi._time_bucket_tz_start(bucket_width, t, timezone, origin)
    ELSE orochi._time_bucket_tz_back(orochi._time_bucket_tz_start(bucket_width, t, timezone, origin), t, bucket_width)
END;

-- An offset without days or months is added on the UTC clock (the same
-- thing, inlined); one with days or months as PostgreSQL adds it.
CREATE FUNCTION orochi.time_bucket(bucket_width interval, ts timestamptz, timezone text,
                                   origin timestamptz DEFAULT NULL, "offset" interval DEFAULT NULL)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN "offset" IS NULL THEN orochi._time_bucket_tz(bucket_width, ts, timezone, origin)
    WHEN orochi._time_bucket_is_time("offset") THEN
        timezone('UTC', timezone('UTC', orochi._time_bucket_tz(
            bucket_width, timezone('UTC', timezone('UTC', ts) - "offset"), timezone, origin)) + "offset")
    ELSE orochi._time_bucket_tstz_add(orochi._time_bucket_tz(
            bucket_width, orochi._time_bucket_tstz_add(ts, - "offset"), timezone, origin), "offset")
END;

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
