"""SQL functions of hypertables and their chunks."""
