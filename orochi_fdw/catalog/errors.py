"""Errors of the catalog and file layer."""

from __future__ import annotations

from orochi_fdw.errors import OrochiError


class CatalogError(OrochiError):
    """Root of the catalog layer's errors (SQLSTATE XX000)."""


class StorageIOError(CatalogError):
    """A stripe file or folder cannot be created, written or read
    (SQLSTATE 58030, io_error)."""

    sqlstate = "58030"

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.hint = hint
        self.detail = detail


class MissingStripeFileError(StorageIOError):
    """A stripe the catalog lists has no file (SQLSTATE 58P01, undefined_file)."""

    sqlstate = "58P01"
