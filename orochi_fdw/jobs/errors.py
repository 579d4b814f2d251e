"""Errors of the jobs catalog and of running jobs."""

from __future__ import annotations

from orochi_fdw.errors import OrochiError


class JobError(OrochiError):
    """Root of the jobs' errors; carries an optional DETAIL and HINT."""

    sqlstate = "XX000"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.detail = detail
        self.hint = hint


class JobNotFoundError(JobError):
    """No job (or no policy of a kind on a table) by that id or name
    (SQLSTATE 42704, undefined_object)."""

    sqlstate = "42704"


class DuplicateJobError(JobError):
    """A table already has a policy of that kind (SQLSTATE 42710, duplicate_object)."""

    sqlstate = "42710"


class JobRoutineNotFoundError(JobError):
    """A user-defined action's routine taking (integer, jsonb) does not exist
    (SQLSTATE 42883, undefined_function)."""

    sqlstate = "42883"


class InvalidJobArgumentError(JobError):
    """An argument of a job function is missing, of the wrong type or out of
    range (SQLSTATE 22023, invalid_parameter_value)."""

    sqlstate = "22023"


class WrongObjectTypeError(JobError):
    """The relation is not what the policy works on, such as a table that is
    not a hypertable (SQLSTATE 42809, wrong_object_type)."""

    sqlstate = "42809"


class JobPrivilegeError(JobError):
    """The current role may not change or run the job (SQLSTATE 42501,
    insufficient_privilege)."""

    sqlstate = "42501"


class JobRunError(JobError):
    """A job's run failed; the message names the job and carries the cause's
    message.  Keeps the cause's SQLSTATE when it had one."""

    def __init__(self, message: str, *, sqlstate: str = "XX000", detail: str | None = None,
                 hint: str | None = None):
        super().__init__(message, detail=detail, hint=hint)
        self.sqlstate = sqlstate
