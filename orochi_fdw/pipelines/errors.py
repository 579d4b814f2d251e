"""Errors of the pipelines: the SQL functions' (with their SQLSTATE) and the
per-record errors that become dead letters."""

from __future__ import annotations

from orochi_fdw.errors import OrochiError


class PipelineError(OrochiError):
    """Root of the pipelines' errors; carries an optional DETAIL and HINT."""

    sqlstate = "XX000"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None,
                 sqlstate: str | None = None):
        super().__init__(message)
        self.detail = detail
        self.hint = hint
        if sqlstate is not None:
            self.sqlstate = sqlstate


class PipelineNotFoundError(PipelineError):
    """No pipeline by that id (42704, undefined_object)."""

    sqlstate = "42704"


class DuplicatePipelineError(PipelineError):
    """A pipeline by that name exists (42710, duplicate_object)."""

    sqlstate = "42710"


class PipelinePrivilegeError(PipelineError):
    """The current role may not do that (42501, insufficient_privilege)."""

    sqlstate = "42501"


class InvalidPipelineOptionError(PipelineError):
    """An option that does not exist, or a value that does not fit
    (22023, invalid_parameter_value)."""

    sqlstate = "22023"


class PipelineStateError(PipelineError):
    """The pipeline is not in a state the command applies to
    (55000, object_not_in_prerequisite_state)."""

    sqlstate = "55000"


class RecordError(Exception):
    """One record that cannot be loaded: it goes to ``orochi.pipeline_errors``.

    Attributes:
        message: what is wrong, in PostgreSQL's words where there are some.
        sqlstate: the SQLSTATE PostgreSQL would give (22P02 for a value that
            does not convert ...).
        column: the target column concerned, if any.
    """

    def __init__(self, message: str, sqlstate: str = "22P02", column: str | None = None):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.column = column
