"""Errors of the sketch layer."""

from orochi_fdw.errors import CorruptDataError


class CorruptSketchError(CorruptDataError):
    """A serialized sketch failed validation: wrong magic, version, length,
    or contents (SQLSTATE 22P03, invalid_binary_representation)."""

    sqlstate = "22P03"
