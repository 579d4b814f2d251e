"""Errors of vector search, each with the SQLSTATE Postgres uses for the same
mistake (the SQL operators of orochi.vector raise 22000 for a dimension
mismatch or a NaN, so the scan that answers them does too)."""

from __future__ import annotations

from orochi_fdw.errors import OrochiError


class VectorError(OrochiError):
    """A vector search or index request that cannot be done (SQLSTATE given
    per case: 22000 data_exception, 22023 invalid_parameter_value, 42501
    insufficient_privilege, 42704 undefined_object, 42809 wrong_object_type,
    0A000 feature_not_supported)."""

    def __init__(self, message: str, sqlstate: str = "22000", detail: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
