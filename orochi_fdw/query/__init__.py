"""Query execution over column batches: aggregation (and, later, predicates,
pruning and top-N), built on the kernels in :mod:`orochi_fdw.kernels`."""
