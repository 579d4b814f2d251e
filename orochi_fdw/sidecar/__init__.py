"""orochi-sidecar: the per-node daemon."""
