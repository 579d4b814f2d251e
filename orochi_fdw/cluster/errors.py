"""Errors of the cluster layer.

Each carries its SQLSTATE; :class:`RemoteError` carries the one a worker
reported, with the worker named in its message, so a client sees the
worker's own error (a unique violation on a shard is still 23505).
"""

from __future__ import annotations

from orochi_fdw.errors import OrochiError


class ClusterError(OrochiError):
    """Root of the cluster layer's errors; the SQLSTATE is given per case."""

    sqlstate = "XX000"

    def __init__(self, message: str, sqlstate: str | None = None, *, detail: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.detail = detail
        self.hint = hint


class NodeConnectionError(ClusterError):
    """A worker could not be reached or the connection to it was lost
    (SQLSTATE 08001 when connecting, 08006 once connected)."""

    sqlstate = "08001"


class RemoteError(ClusterError):
    """An error a worker reported for a command the coordinator sent; its
    SQLSTATE, message, detail and hint are the worker's."""

    def __init__(self, node: str, message: str, sqlstate: str | None, detail: str | None = None,
                 hint: str | None = None, command: str | None = None):
        super().__init__(f"{message} (on node {node})", sqlstate or "XX000", detail=detail, hint=hint)
        self.node = node
        self.remote_message = message
        self.command = command


class DistributionError(ClusterError):
    """A distributed-table function's argument or the table does not fit
    (SQLSTATE given per case)."""


class UnsupportedDistributedQuery(ClusterError):
    """A statement on distributed tables the cluster layer does not run
    (SQLSTATE 0A000, feature_not_supported)."""

    sqlstate = "0A000"
