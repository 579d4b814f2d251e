-- Orochi: the foreign-data wrapper, its default server, and the SQL entry
-- point shared by every function written in Python.

\echo Use "CREATE EXTENSION orochi" to load this file. \quit

CREATE FUNCTION orochi.orochi_fdw_handler()
RETURNS fdw_handler
AS 'MODULE_PATHNAME', 'orochi_fdw_handler'
LANGUAGE C STRICT;

CREATE FUNCTION orochi.orochi_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'orochi_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER orochi
  HANDLER orochi.orochi_fdw_handler
  VALIDATOR orochi.orochi_fdw_validator;

CREATE SERVER orochi FOREIGN DATA WRAPPER orochi;

-- Everyone may use what the schema offers (time_bucket, sketches, the views);
-- what each object allows is then up to its own privileges: the catalog
-- tables are readable where that is safe and writable by their owner only.
GRANT USAGE ON SCHEMA orochi TO PUBLIC;

-- Facts about the Python side of this backend: the interpreter, the
-- virtualenv and the orochi package in use.
CREATE FUNCTION orochi.python_info(OUT key text, OUT value text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;
