"""The cluster layer: distributed and reference tables across PostgreSQL
nodes (docs/distributed.md).

The coordinator keeps the metadata (:mod:`.metadata`); a distributed table
on it is an orochi foreign table served by :class:`DistributedTable`, which
prunes shards (:mod:`.planner`), runs statements on the workers over libpq
(:mod:`.connection`, :mod:`.executor`), merges aggregates
(:mod:`.aggregate`) and routes writes, inside a distributed transaction
committed with two-phase commit when several nodes wrote
(:mod:`.transaction`, :mod:`.recovery`).  The columnar engine does not know
it is a shard.
"""

from orochi_fdw.cluster.table import DistributedTable

__all__ = ["DistributedTable"]
