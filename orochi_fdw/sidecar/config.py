"""orochi-sidecar's configuration: a declarative schema and its layers.

Settings are named by dotted keys (``http.port``).  Each layer overrides the
one before: the schema's defaults, the TOML file (``[http]`` ``port = 8008``),
environment variables (``OROCHI_SIDECAR_HTTP_PORT=8008``), the command line.
Every value is checked against the schema; a bad one is a
:class:`ConfigError` naming the key and where the value came from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from orochi_fdw.errors import OrochiError

ENV_PREFIX = "OROCHI_SIDECAR_"
#: the environment variable naming the configuration file
CONFIG_FILE_ENV = ENV_PREFIX + "CONFIG"

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(OrochiError):
    """A configuration key that does not exist or a value that does not fit."""

    sqlstate = "22023"


@dataclass(frozen=True)
class Setting:
    """One key of the schema.

    Attributes:
        key: dotted name (``section.name``).
        type: str, int, float, bool or list (of strings).
        default: the value when no layer sets it (None: unset).
        description: one line for the documentation and ``--help``.
        check: returns an error text for a bad value, or None.
        required: whether it must be set by some layer.
        secret: never shown in logs (the DSN may carry a password).
    """

    key: str
    type: type
    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None
    required: bool = False
    secret: bool = False

    @property
    def env_name(self) -> str:
        """The environment variable that sets it."""
        return ENV_PREFIX + self.key.replace(".", "_").upper()


def _between(low: float, high: float | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value < low or (high is not None and value > high):
            return f"must be between {low} and {high}" if high is not None else f"must be at least {low}"
        return None
    return check


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else "must be one of " + ", ".join(choices)
    return check


def _known_duties(value: Any) -> str | None:
    from orochi_fdw.sidecar.duties import duty_names
    unknown = [v for v in value if v not in duty_names()]
    return f"unknown duty {unknown[0]!r} (known: {', '.join(duty_names())})" if unknown else None


SCHEMA: tuple[Setting, ...] = (
    Setting("dsn", str, None, "libpq connection string or URI of the database whose jobs to run",
            required=True, secret=True),
    Setting("log_level", str, "info", "debug, info, warning or error", _one_of(LOG_LEVELS)),
    Setting("application_name", str, "orochi-sidecar", "application_name of the daemon's connections"),
    Setting("connect_timeout", int, 5, "seconds to wait for a connection to Postgres", _positive),
    Setting("duties", list, ["jobs"], "the duties to run (registered names)", _known_duties),
    Setting("http.host", str, "127.0.0.1", "address of the REST API"),
    Setting("http.port", int, 8008, "port of the REST API (0: pick a free one, logged at start)",
            _between(0, 65535)),
    Setting("http.enabled", bool, True, "whether to serve the REST API"),
    Setting("jobs.poll_interval", float, 10.0, "seconds between two looks for due jobs", _positive),
    Setting("jobs.max_jobs_per_cycle", int, 100, "most jobs run in one cycle", _between(1)),
    Setting("jobs.shutdown_grace", float, 30.0,
            "seconds a running job may go on after SIGTERM before it is cancelled", _between(0)),
    Setting("jobs.client_check_interval", float, 1.0,
            "seconds between a job's backend checks that the daemon is still connected "
            "(a killed daemon's job rolls back)", _between(0)),
    Setting("recovery.interval", float, 60.0,
            "seconds between two recoveries of prepared transactions (the recovery duty)", _positive),
    Setting("rebalance.poll_interval", float, 5.0,
            "seconds between two looks for queued shard moves and interrupted ones to recover", _positive),
    Setting("reconnect.min_delay", float, 1.0, "first delay before reconnecting to Postgres, in seconds",
            _positive),
    Setting("reconnect.max_delay", float, 60.0, "longest delay between reconnection attempts, in seconds",
            _positive),
    # the pipelines duty (docs/pipelines.md)
    Setting("pipelines.poll_interval", float, 5.0,
            "seconds between two looks for pipelines to start (workers notice pause and stop by themselves)",
            _positive),
    Setting("pipelines.max_workers", int, 4, "most pipelines run at once (one worker thread each)", _between(1)),
    Setting("pipelines.shutdown_grace", float, 10.0,
            "seconds the workers may take to finish their batch at shutdown", _between(0)),
    # the cdc duty (docs/cdc.md)
    Setting("cdc.poll_interval", float, 5.0,
            "seconds between two looks for subscriptions to start, slots past max_lag and orphaned slots",
            _positive),
    Setting("cdc.max_workers", int, 4, "most subscriptions streamed at once (one worker thread each)",
            _between(1)),
    Setting("cdc.shutdown_grace", float, 10.0, "seconds the workers may take to finish their batch at shutdown",
            _between(0)),
    Setting("cdc.peek_changes", int, 10000, "changes read from a slot at a time (whole transactions)",
            _between(1)),
    # the ha duty (docs/ha.md)
    Setting("ha.member_id", str, "", "this sidecar's member id in the Raft group (one of ha.peers)"),
    Setting("ha.peers", list, [], "every member of the Raft group as \"id=host:port\" (its Raft address)"),
    Setting("ha.node_group", str, "default",
            "the node group whose primary or standby this member's PostgreSQL is (e.g. coordinator, worker1)"),
    Setting("ha.initial_role", str, "standby",
            "primary or standby: what this member's PostgreSQL is when the group is first formed",
            _one_of(("primary", "standby"))),
    Setting("ha.data_dir", str, "", "the data directory of this member's PostgreSQL"),
    Setting("ha.journal_dir", str, "", "where the Raft journal and snapshot are kept"),
    Setting("ha.pg_bindir", str, "", "PostgreSQL's bin directory (pg_ctl, pg_rewind); empty: pg_config's"),
    Setting("ha.pg_os_user", str, "",
            "OS user that runs PostgreSQL's programs when the sidecar runs as root (empty: postgres)"),
    Setting("ha.pg_log", str, "", "server log file of a PostgreSQL the sidecar starts (empty: <data_dir>/log)"),
    Setting("ha.synchronous_mode", str, "quorum",
            "quorum: synchronous_standby_names = ANY 1 (the other members); off: asynchronous",
            _one_of(("quorum", "off"))),
    Setting("ha.lease_ttl", float, 3.0, "seconds a primary's lease lasts after its last renewal", _positive),
    Setting("ha.renew_interval", float, 0.25, "seconds between two renewals of the primary's lease", _positive),
    Setting("ha.loop_interval", float, 0.1, "seconds between two looks at PostgreSQL and the Raft state",
            _positive),
    Setting("ha.raft_min_timeout", float, 0.4, "Raft election timeout, lower bound (seconds)", _positive),
    Setting("ha.raft_max_timeout", float, 1.2, "Raft election timeout, upper bound (seconds)", _positive),
    Setting("ha.raft_password_file", str, "",
            "file holding the Raft group's shared secret (first line; readable by its owner only), required "
            "by the ha duty: the members' Raft traffic is encrypted and authenticated with it"),
    Setting("ha.coordinator_group", str, "coordinator",
            "the node group of the coordinator, whose orochi.nodes follows the failovers of the others"),
    Setting("ha.fence_mode", str, "read_only",
            "how a primary that lost its lease stops writes: read_only (default_transaction_read_only, sessions "
            "ended) or stop (pg_ctl stop -m immediate)", _one_of(("read_only", "stop"))),
    Setting("ha.metadata_databases", list, [],
            "the coordinator's databases with distributed tables (empty: the database of dsn)"),
)

_BY_KEY = {s.key: s for s in SCHEMA}


def _convert(setting: Setting, value: Any, source: str) -> Any:
    """A raw value (TOML-typed, or text from the environment / command line) as the setting's type."""
    def bad(reason: str) -> ConfigError:
        return ConfigError(f'invalid value for "{setting.key}" ({source}): {reason}, got {value!r}')

    kind = setting.type
    if kind is bool:
        if isinstance(value, bool):
            converted: Any = value
        elif isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            converted = value.lower() in ("1", "true", "yes", "on")
        else:
            raise bad("expected a boolean")
    elif kind is int:
        if isinstance(value, bool):
            raise bad("expected an integer")
        try:
            converted = int(value) if isinstance(value, (int, str)) else None
        except ValueError:
            converted = None
        if converted is None:
            raise bad("expected an integer")
    elif kind is float:
        if isinstance(value, bool):
            raise bad("expected a number")
        try:
            converted = float(value) if isinstance(value, (int, float, str)) else None
        except ValueError:
            converted = None
        if converted is None:
            raise bad("expected a number")
    elif kind is list:
        if isinstance(value, str):
            converted = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            converted = list(value)
        else:
            raise bad("expected a list of strings")
    else:
        if not isinstance(value, str):
            raise bad("expected a string")
        converted = value
    if setting.check is not None:
        problem = setting.check(converted)
        if problem:
            raise bad(problem)
    return converted


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and not any(s.key == key for s in SCHEMA):
            yield from _flatten(value, key + ".")
        else:
            yield key, value


def _unknown(key: str, source: str) -> ConfigError:
    return ConfigError(f'unknown configuration key "{key}" ({source}); known keys: '
                       + ", ".join(s.key for s in SCHEMA))


def read_file(path: str) -> dict[str, Any]:
    """The settings of a TOML file, by dotted key (not yet checked)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f'could not read configuration file "{path}": {exc.strerror}') from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f'configuration file "{path}" is not valid TOML: {exc}') from None
    return dict(_flatten(data))


class Config(Mapping[str, Any]):
    """Checked settings by dotted key, and where each came from."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]):
        self._values = dict(values)
        self.sources = dict(sources)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def describe(self) -> dict[str, str]:
        """Each setting's value as text (secrets hidden) with its source, for the log."""
        out = {}
        for key, value in self._values.items():
            shown = "********" if _BY_KEY[key].secret and value is not None else repr(value)
            out[key] = f"{shown} ({self.sources[key]})"
        return out


def load(file_path: str | None = None, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Settings from every layer, checked.

    Args:
        file_path: a TOML file (else the one ``OROCHI_SIDECAR_CONFIG`` names, if any).
        environ: the environment (default ``os.environ``).
        overrides: command-line values by dotted key (None values are ignored).

    Returns:
        The configuration.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or out of
            range, or a required setting missing.
    """
    environ = os.environ if environ is None else environ
    values = {s.key: s.default for s in SCHEMA}
    sources = {s.key: "default" for s in SCHEMA}
    file_path = file_path or environ.get(CONFIG_FILE_ENV) or None
    if file_path:
        source = f'file "{file_path}"'
        for key, raw in read_file(file_path).items():
            if key not in _BY_KEY:
                raise _unknown(key, source)
            values[key] = _convert(_BY_KEY[key], raw, source)
            sources[key] = source
    env_names = {s.env_name: s for s in SCHEMA}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        setting = env_names.get(name)
        if setting is None:
            raise ConfigError(f"unknown environment variable {name}; known: "
                              + ", ".join(sorted(env_names)))
        source = f"environment variable {name}"
        values[setting.key] = _convert(setting, raw, source)
        sources[setting.key] = source
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        if key not in _BY_KEY:
            raise _unknown(key, "command line")
        values[key] = _convert(_BY_KEY[key], raw, "command line")
        sources[key] = "command line"
    for setting in SCHEMA:
        if setting.required and not values[setting.key]:
            raise ConfigError(f'"{setting.key}" is required: set it in the configuration file, '
                              f"with {setting.env_name} or on the command line")
    if values["reconnect.min_delay"] > values["reconnect.max_delay"]:
        raise ConfigError('"reconnect.min_delay" must not exceed "reconnect.max_delay"')
    if "ha" in values["duties"]:
        from orochi_fdw.ha.settings import check_ha_settings
        check_ha_settings(values, sources)
    return Config(values, sources)
