"""The catalog of columnar storage: which stripe files make up each table,
kept in tables of schema ``orochi`` and written through SPI in the user's
own transaction, and what happens to stripe files when that transaction
ends (:mod:`~orochi_fdw.catalog.ledger`) or leaves them behind
(:mod:`~orochi_fdw.catalog.vacuum`)."""

from orochi_fdw.catalog.errors import CatalogError, MissingStripeFileError, StorageIOError

__all__ = ["CatalogError", "MissingStripeFileError", "StorageIOError"]
