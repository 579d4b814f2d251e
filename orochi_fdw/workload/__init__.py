"""Workload management: resource pools, workload classes and their SQL API.

The decisions that are not on a statement's path live here: what a pool or
class definition may say (validation, normalization of a class's ``match``),
and the catalog tables that hold them. Admission itself (classifying a
session, taking a slot, the queue) is the C side's (``pgext/workload.c``),
which reads what this package wrote. See docs/workload.md.
"""
