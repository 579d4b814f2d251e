"""Errors of the workload management API."""

from __future__ import annotations

from orochi_fdw.errors import OrochiError


class WorkloadError(OrochiError):
    """Root of the workload API's errors; carries an optional DETAIL and HINT."""

    sqlstate = "XX000"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.detail = detail
        self.hint = hint


class InvalidWorkloadArgumentError(WorkloadError):
    """An argument is missing, of the wrong shape or out of range
    (SQLSTATE 22023, invalid_parameter_value)."""

    sqlstate = "22023"


class UndefinedWorkloadObjectError(WorkloadError):
    """No pool, class or role by that name (SQLSTATE 42704, undefined_object)."""

    sqlstate = "42704"


class UndefinedDatabaseError(WorkloadError):
    """A class names a database that does not exist (SQLSTATE 3D000,
    invalid_catalog_name)."""

    sqlstate = "3D000"


class DuplicateWorkloadObjectError(WorkloadError):
    """A pool or class of that name exists already (SQLSTATE 42710,
    duplicate_object)."""

    sqlstate = "42710"


class PoolInUseError(WorkloadError):
    """A pool to drop still runs or queues statements (SQLSTATE 55006,
    object_in_use)."""

    sqlstate = "55006"


class DependentClassesError(WorkloadError):
    """A pool to drop is named by workload classes (SQLSTATE 2BP01,
    dependent_objects_still_exist)."""

    sqlstate = "2BP01"


class WrongDatabaseError(WorkloadError):
    """Pools and classes are changed in the workload database only
    (SQLSTATE 55000, object_not_in_prerequisite_state)."""

    sqlstate = "55000"


class DefaultPoolError(WorkloadError):
    """The default pool is configured by settings, not by the API
    (SQLSTATE 0A000, feature_not_supported)."""

    sqlstate = "0A000"


class WorkloadLimitError(WorkloadError):
    """More pools, classes or role assignments than shared memory holds
    (SQLSTATE 54000, program_limit_exceeded)."""

    sqlstate = "54000"
