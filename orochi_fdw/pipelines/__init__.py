"""Ingest pipelines: Kafka topics, S3 objects and watched files loaded into
tables by orochi-sidecar, exactly once (docs/pipelines.md).

- :mod:`.options`, :mod:`.mapping`, :mod:`.decode`, :mod:`.records`: what a
  pipeline reads and how records become rows (shared by the backend, which
  checks a pipeline when it is created, and the sidecar, which runs it);
- :mod:`.sqlapi`: the SQL functions (in the backend);
- :mod:`.sources`: Kafka (confluent-kafka), S3 (boto3), files (watchdog);
- :mod:`.worker`: one pipeline's batches, each loaded with its positions in
  one transaction; :mod:`.duty`: the sidecar duty running the workers;
- :mod:`.faults`: fault points for crash tests.
"""
