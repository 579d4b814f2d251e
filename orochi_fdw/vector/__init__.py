"""Vector search over columnar tables (docs/vector.md).

- :mod:`~orochi_fdw.vector.types`: the ``orochi.vector`` type as Python sees
  it (its float32 payload), which columns hold vectors;
- :mod:`~orochi_fdw.vector.reference`: numpy distances, the reference the
  kernels (``orochi_fdw.kernels.vector``) are tested against;
- :mod:`~orochi_fdw.vector.catalog`: index definitions and per-stripe index
  files in the catalog;
- :mod:`~orochi_fdw.vector.indexes`: building, writing and opening the
  per-stripe index files (HNSW through usearch, IVFFlat of our own);
- :mod:`~orochi_fdw.vector.search`: ``ORDER BY column <-> value LIMIT k``
  answered inside the scan, exactly or through the indexes;
- :mod:`~orochi_fdw.vector.sqlapi`: ``orochi.create_vector_index`` and
  ``orochi.drop_vector_index``.
"""
