"""Background jobs: the jobs catalog, their statistics, and running one."""
