"""High availability (docs/ha.md): the ``ha`` duty of orochi-sidecar.

The sidecars of a cluster form a Raft group (pysyncobj) whose replicated
state says which PostgreSQL is the primary of each node group, with a lease
the primary's sidecar renews and a generation bumped by every failover.
"""
