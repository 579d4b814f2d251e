"""The sources of pipelines: one module per kind, each imported only when a
pipeline of that kind runs (its client library with it)."""
