"""orochi-sidecar's configuration layers and schema checks (no Postgres)."""

from __future__ import annotations

import pytest

from orochi_fdw.sidecar import config as configuration
from orochi_fdw.sidecar.config import ConfigError


def _write(tmp_path, text):
    path = tmp_path / "sidecar.toml"
    path.write_text(text)
    return str(path)


def test_defaults_need_only_a_dsn():
    config = configuration.load(environ={}, overrides={"dsn": "dbname=app"})
    assert config["http.host"] == "127.0.0.1" and config["http.port"] == 8008
    assert config["jobs.poll_interval"] == 10.0 and config["duties"] == ["jobs"]
    assert config.sources["dsn"] == "command line" and config.sources["http.port"] == "default"


def test_layers_override_in_order(tmp_path):
    path = _write(tmp_path, 'dsn = "dbname=from_file"\nlog_level = "debug"\n'
                            '[http]\nport = 9000\nhost = "127.0.0.2"\n[jobs]\npoll_interval = 2\n')
    environ = {"OROCHI_SIDECAR_HTTP_PORT": "9100", "OROCHI_SIDECAR_JOBS_POLL_INTERVAL": "0.5",
               "OTHER_VARIABLE": "ignored"}
    config = configuration.load(path, environ=environ, overrides={"http.port": 9200, "dsn": None})
    assert config["dsn"] == "dbname=from_file" and config.sources["dsn"] == f'file "{path}"'
    assert config["http.host"] == "127.0.0.2" and config["log_level"] == "debug"
    assert config["jobs.poll_interval"] == 0.5
    assert config.sources["jobs.poll_interval"] == "environment variable OROCHI_SIDECAR_JOBS_POLL_INTERVAL"
    assert config["http.port"] == 9200 and config.sources["http.port"] == "command line"
    assert "dbname" not in config.describe()["dsn"]  # the DSN may carry a password


def test_config_file_from_the_environment(tmp_path):
    path = _write(tmp_path, 'dsn = "dbname=x"\n[http]\nenabled = false\n')
    config = configuration.load(environ={"OROCHI_SIDECAR_CONFIG": path})
    assert config["http.enabled"] is False


@pytest.mark.parametrize("text, message", [
    ('dsn = "x"\n[http]\nprot = 1\n', 'unknown configuration key "http.prot"'),
    ('dsn = "x"\n[http]\nport = "high"\n', 'invalid value for "http.port" .*expected an integer'),
    ('dsn = "x"\n[http]\nport = 70000\n', 'invalid value for "http.port" .*between 0 and 65535'),
    ('dsn = "x"\n[jobs]\npoll_interval = 0\n', 'invalid value for "jobs.poll_interval" .*greater than 0'),
    ('dsn = "x"\nlog_level = "loud"\n', 'invalid value for "log_level" .*one of debug, info'),
    ('dsn = "x"\nduties = ["jobs", "raft"]\n', "unknown duty 'raft'"),
    ('dsn = "x"\n[reconnect]\nmin_delay = 10\nmax_delay = 1\n', "min_delay.* must not exceed"),
    ('dsn = "x"\n[http\n', "is not valid TOML"),
    ('[http]\nport = 1\n', '"dsn" is required'),
])
def test_bad_files_are_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        configuration.load(_write(tmp_path, text), environ={})


def test_bad_environment_values_name_the_variable():
    with pytest.raises(ConfigError, match="OROCHI_SIDECAR_HTTP_ENABLED.*expected a boolean"):
        configuration.load(environ={"OROCHI_SIDECAR_HTTP_ENABLED": "maybe"}, overrides={"dsn": "x"})
    with pytest.raises(ConfigError, match="unknown environment variable OROCHI_SIDECAR_HTTP_PROT"):
        configuration.load(environ={"OROCHI_SIDECAR_HTTP_PROT": "1"}, overrides={"dsn": "x"})
    with pytest.raises(ConfigError, match="could not read configuration file"):
        configuration.load("/nonexistent/sidecar.toml", environ={})


def test_every_setting_has_an_environment_variable_and_a_description():
    names = [s.env_name for s in configuration.SCHEMA]
    assert len(set(names)) == len(names)
    assert all(s.description for s in configuration.SCHEMA)
