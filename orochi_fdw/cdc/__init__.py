"""Change data capture: ordered, transactional change streams of heap and
orochi tables to Kafka, webhooks and files, in Debezium's format.

- :mod:`.capture`, :mod:`.payload`: in the writing backend, the changes of
  orochi tables as signed transactional logical messages;
- :mod:`.sqlapi`, :mod:`.options`: the SQL functions and their checks;
- :mod:`.pgoutput`, :mod:`.values`, :mod:`.events`: in the sidecar, the
  slot's stream decoded into change events;
- :mod:`.sinks`, :mod:`.worker`, :mod:`.duty`: delivery, one worker per
  subscription (docs/cdc.md).
"""
