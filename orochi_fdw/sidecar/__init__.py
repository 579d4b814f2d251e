"""orochi-sidecar: the per-node daemon.

The daemon owns three separate things, as Patroni's does:

- the loop (:mod:`.daemon`): runs each duty's ``run_cycle()`` when it is due,
  logs what it returns, and survives anything a duty raises;
- the duties (:mod:`.duties`): one object per kind of background work, found
  through a registry (the jobs scheduler is :mod:`.jobs`; Raft, ingest
  pipelines, change capture and tiering are added the same way);
- the REST API (:mod:`.api`): /health, /jobs and /metrics on the loopback
  interface.

Configuration comes in layers (:mod:`.config`): defaults, a TOML file,
``OROCHI_SIDECAR_*`` environment variables, then the command line.
"""
