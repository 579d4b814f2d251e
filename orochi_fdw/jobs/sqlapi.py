"""SQL functions of the jobs catalog."""
