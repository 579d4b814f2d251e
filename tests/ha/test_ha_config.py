"""The ha duty's configuration: every error names the key at fault
(unknown peer, duplicate member id, a data directory that is not a
standby), in-process and as orochi-sidecar's exit status 2."""

from __future__ import annotations

import os
import subprocess

import pytest

from orochi_fdw.sidecar import config as configuration
from orochi_fdw.sidecar.config import ConfigError
from orochi_fdw.testing.cluster import PostgresCluster
from orochi_fdw.testing.ha import SIDECAR

PEERS = ["a=127.0.0.1:7101", "b=127.0.0.1:7102", "c=127.0.0.1:7103"]


@pytest.fixture(scope="module")
def data_dir():
    """A real data directory (initdb'ed, never started): not a standby."""
    cluster = PostgresCluster("ha-config")
    cluster.init()
    yield cluster.datadir
    cluster.cleanup()


def _secret(tmp_path, mode: int = 0o600, name: str = "raft.secret") -> str:
    path = tmp_path / name
    path.write_text("a long random secret\n")
    os.chmod(path, mode)
    return str(path)


def _write(tmp_path, data_dir, **ha) -> str:
    values = {"member_id": "a", "peers": PEERS, "data_dir": data_dir,
              "journal_dir": str(tmp_path / "raft"), "initial_role": "primary",
              "raft_password_file": _secret(tmp_path), **ha}
    lines = ['dsn = "host=127.0.0.1 port=5432 dbname=postgres"', 'duties = ["ha"]', "[ha]"]
    for key, value in values.items():
        if isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        else:
            lines.append(f'{key} = "{value}"')
    path = tmp_path / "sidecar.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _error(tmp_path, data_dir, **ha) -> str:
    with pytest.raises(ConfigError) as info:
        configuration.load(_write(tmp_path, data_dir, **ha), environ={})
    return str(info.value)


def test_a_good_configuration_loads(tmp_path, data_dir):
    config = configuration.load(_write(tmp_path, data_dir), environ={})
    assert config["ha.member_id"] == "a" and config["ha.peers"] == PEERS


def test_unknown_peer(tmp_path, data_dir):
    message = _error(tmp_path, data_dir, member_id="d")
    assert '"ha.member_id"' in message and "unknown peer 'd'" in message and "a, b, c" in message


def test_duplicate_member_id(tmp_path, data_dir):
    message = _error(tmp_path, data_dir, peers=PEERS + ["b=127.0.0.1:7104"])
    assert '"ha.peers"' in message and "duplicate member id 'b'" in message


def test_duplicate_address_and_bad_peer(tmp_path, data_dir):
    assert "same address 127.0.0.1:7101" in _error(tmp_path, data_dir, peers=PEERS + ["d=127.0.0.1:7101"])
    assert 'expected "id=host:port"' in _error(tmp_path, data_dir, peers=["a=127.0.0.1"])


def test_a_data_directory_that_is_not_a_standby(tmp_path, data_dir):
    message = _error(tmp_path, data_dir, member_id="b", initial_role="standby")
    assert '"ha.data_dir"' in message and "is not a standby (no standby.signal)" in message


def test_a_folder_that_is_no_data_directory(tmp_path):
    message = _error(tmp_path, str(tmp_path))
    assert '"ha.data_dir"' in message and "not a PostgreSQL data directory" in message


def test_the_raft_secret_is_required_and_private(tmp_path, data_dir):
    message = _error(tmp_path, data_dir, raft_password_file="")
    assert '"ha.raft_password_file" is required' in message and "pickles" in message
    message = _error(tmp_path, data_dir, raft_password_file=_secret(tmp_path, 0o644, "shared.secret"))
    assert '"ha.raft_password_file"' in message and "group or world access" in message


def test_lease_shorter_than_an_election(tmp_path, data_dir):
    message = _error(tmp_path, data_dir, lease_ttl="x")
    assert '"ha.lease_ttl"' in message and "expected a number" in message
    path = _write(tmp_path, data_dir)
    with open(path, "a") as f:
        f.write("lease_ttl = 1.0\nrenew_interval = 0.2\n")
    with pytest.raises(ConfigError, match=r'"ha.lease_ttl" \(1.0\) must exceed twice "ha.raft_max_timeout"'):
        configuration.load(path, environ={})


def test_the_sidecar_exits_2_naming_the_key(tmp_path, data_dir):
    path = _write(tmp_path, data_dir, member_id="b", initial_role="standby")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OROCHI_SIDECAR_")}
    proc = subprocess.run([SIDECAR, "--config", path, "--once"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert 'configuration error: invalid value for "ha.data_dir"' in proc.stderr
    assert not os.path.exists(tmp_path / "raft"), "nothing is made before the configuration is checked"
