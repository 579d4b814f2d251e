"""Orochi's exception hierarchy.

Every error Orochi raises on purpose derives from :class:`OrochiError`. Each
class carries the PostgreSQL SQLSTATE that the bridge reports when the error
reaches a backend, so a client sees a familiar error code.
"""

from __future__ import annotations


class OrochiError(Exception):
    """Root of all Orochi errors (SQLSTATE XX000, internal_error)."""

    sqlstate = "XX000"


class CorruptDataError(OrochiError):
    """Stored data failed validation: bad magic, checksum, length or encoding.

    Raised by every decoder and by the stripe reader when bytes read back are
    truncated, inconsistent or fail a checksum (SQLSTATE XX001, data_corrupted).
    """

    sqlstate = "XX001"


class InvalidParameterError(OrochiError, ValueError):
    """A caller passed an invalid option or argument value.

    For example an unknown ``compression`` setting, a compression level out of
    range, or a column whose array does not match its declared kind
    (SQLSTATE 22023, invalid_parameter_value).
    """

    sqlstate = "22023"


class InvalidOptionError(OrochiError):
    """An unknown foreign-data wrapper, server, table or column option
    (SQLSTATE HV00D, fdw_invalid_option_name)."""

    sqlstate = "HV00D"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class InvalidOptionValueError(OrochiError):
    """An option whose value has the wrong type or is out of range
    (SQLSTATE HV024, fdw_invalid_attribute_value)."""

    sqlstate = "HV024"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class WrapperError(OrochiError):
    """A wrapper class cannot be loaded or broke the bridge's contract
    (SQLSTATE HV000, fdw_error)."""

    sqlstate = "HV000"


class NumericValueOutOfRangeError(OrochiError, ArithmeticError):
    """An aggregate's result or running state left its type's range, where
    Postgres raises the same error: ``bigint out of range`` for an int8 sum,
    ``value out of range: overflow`` for a float sum of finite values
    (SQLSTATE 22003, numeric_value_out_of_range)."""

    sqlstate = "22003"


class DivisionByZeroError(OrochiError, ArithmeticError):
    """Division (or modulo) by zero, as PostgreSQL reports it."""

    sqlstate = "22012"


class DatetimeValueOutOfRangeError(OrochiError, ArithmeticError):
    """A date or timestamp out of its type's range, as PostgreSQL reports it."""

    sqlstate = "22008"


class InsufficientPrivilegeError(OrochiError):
    """The current role may not do what it asked: it does not own the table,
    lacks a privilege on it, or is not a superuser where one is needed
    (SQLSTATE 42501, insufficient_privilege)."""

    sqlstate = "42501"

    def __init__(self, message: str, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.detail = detail
        self.hint = hint


class FeatureNotSupportedError(OrochiError):
    """The statement asks for something Orochi does not do
    (SQLSTATE 0A000, feature_not_supported)."""

    sqlstate = "0A000"


class CheckViolationError(OrochiError):
    """Stored rows break a CHECK constraint being added
    (SQLSTATE 23514, check_violation)."""

    sqlstate = "23514"


class SPIError(OrochiError):
    """A Postgres error raised by SQL that Python ran through the bridge.

    Carries the original SQLSTATE, message, detail, hint and context, so that
    an uncaught SPIError reaches the client exactly as Postgres reported it.
    """

    def __init__(self, message: str, sqlstate: str = "XX000", detail: str | None = None,
                 hint: str | None = None, context: str | None = None):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
        self.context = context


class StatementAborted(BaseException):
    """A Postgres error that ends the statement: Python cannot carry on after it.

    Raised by SQL from Python (:mod:`orochi_fdw.bridge.spi`) when the error
    cannot be rolled back inside the statement: in parallel mode (the
    backend runs a parallel plan, or is a parallel worker) SQL runs without a
    sub-transaction, and a query cancel must end the statement. It derives
    from ``BaseException``, so ``except Exception`` does not catch it; even
    if caught, every later SQL call raises it again, and the bridge reports
    the original Postgres error as soon as Python returns. Carries the same
    fields as :class:`SPIError`.
    """

    def __init__(self, message: str, sqlstate: str = "XX000", detail: str | None = None,
                 hint: str | None = None, context: str | None = None):
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint
        self.context = context
