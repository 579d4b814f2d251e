"""Errors of change data capture, with their SQLSTATE."""

from __future__ import annotations

from orochi_fdw.errors import OrochiError


class CdcError(OrochiError):
    """Root of the CDC errors; carries an optional DETAIL and HINT."""

    sqlstate = "XX000"

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None,
                 sqlstate: str | None = None):
        super().__init__(message)
        self.detail = detail
        self.hint = hint
        if sqlstate is not None:
            self.sqlstate = sqlstate


class SubscriptionNotFoundError(CdcError):
    """No subscription by that name (42704, undefined_object)."""

    sqlstate = "42704"


class DuplicateSubscriptionError(CdcError):
    """A subscription by that name exists (42710, duplicate_object)."""

    sqlstate = "42710"


class CdcPrivilegeError(CdcError):
    """The current role may not do that (42501, insufficient_privilege)."""

    sqlstate = "42501"


class InvalidCdcOptionError(CdcError):
    """An unknown option, or a value that does not fit (22023)."""

    sqlstate = "22023"


class CdcStateError(CdcError):
    """Not in a state the command applies to, or a prerequisite missing:
    wal_level, a table without a key (55000, object_not_in_prerequisite_state)."""

    sqlstate = "55000"


class SinkUnreachableError(CdcError):
    """The sink did not answer when the subscription was created
    (08001, sqlclient_unable_to_establish_sqlconnection: the nearest class)."""

    sqlstate = "08001"
