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

-- Privileges (docs/SECURITY.md).  Everyone may make columnar tables on the
-- default server (its wrapper is the columnar engine), as everyone may make
-- heap tables where they may create; making other servers needs USAGE on the
-- foreign-data wrapper, which a superuser grants.
GRANT USAGE ON FOREIGN SERVER orochi TO PUBLIC;

-- Everyone may use what the schema offers (time_bucket, sketches, the SQL
-- functions, the views); what each allows is then up to the caller's
-- privileges on the tables it names.  The catalog tables, sequences and
-- delta tables are granted to no one: Orochi reads and writes them as the
-- extension owner, after checking the caller's rights (Python:
-- orochi_fdw.bridge.spi, internal statements), and the views show each role
-- the rows of the tables it may read.  Internal functions are revoked from
-- PUBLIC; the event triggers that call them run as the extension owner
-- (SECURITY DEFINER, with the search path pinned).
GRANT USAGE ON SCHEMA orochi TO PUBLIC;

-- Facts about the Python side of this backend: the interpreter, the
-- virtualenv and the orochi package in use.
CREATE FUNCTION orochi.python_info(OUT key text, OUT value text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'orochi_py_call'
LANGUAGE C VOLATILE;
