"""The Raft group's shared secret (``ha.raft_password_file``): members that
share it elect a leader and replicate; a peer or a pysyncobj utility client
without it is not heard (what it sends is never unpickled, its membership
commands get no answer); the setting's file is checked."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import zlib

import pytest
from pysyncobj.utility import TcpUtility, UtilityException

from orochi_fdw.ha.settings import read_raft_password
from orochi_fdw.ha.state import HaState, make_raft, wait_result
from orochi_fdw.sidecar.config import ConfigError
from orochi_fdw.testing.cluster import find_free_port
from orochi_fdw.testing.ha import wait_until

SECRET = "correct horse battery staple"


def _member(tmp_path, name: str, me: str, partners: list[str], password: str | None,
            timeouts: tuple[float, float] = (1.0, 3.0)):
    state = HaState()
    raft = make_raft(me, partners, state, str(tmp_path / f"raft-{name}"),
                     min_timeout=timeouts[0], max_timeout=timeouts[1], password=password)
    return raft, state


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """Three members sharing SECRET, with a leader elected."""
    tmp_path = tmp_path_factory.mktemp("raft-secret")
    addresses = [f"127.0.0.1:{find_free_port()}" for _ in range(3)]
    members = [_member(tmp_path, f"m{i}", a, [b for b in addresses if b != a], SECRET)
               for i, a in enumerate(addresses)]
    try:
        wait_until(lambda: all(raft.getStatus()['leader'] is not None for raft, _ in members), 60,
                   "a leader known to every member")
        yield addresses, members
    finally:
        for raft, _ in members:
            raft.destroy()


def _term(raft) -> int:
    return raft.getStatus()["raft_term"]


def _utility(address: str, command: list[str], password: str | None):
    try:
        return TcpUtility(password=password, timeout=5.0).executeCommand(address, command)
    except UtilityException as exc:
        return exc


def test_members_with_the_secret_replicate(group):
    addresses, members = group
    raft, state = members[0]
    result, error = wait_result(state.register, "x", {"address": "127.0.0.1:1"}, timeout=30)
    assert error is None and result is True
    wait_until(lambda: all("x" in s.members for _, s in members), 30, "the change on every member")
    status = _utility(addresses[1], ["status"], SECRET)
    assert isinstance(status, dict) and status["partner_nodes_count"] == 2


def test_a_client_without_the_secret_is_not_heard(group):
    addresses, members = group
    for password in (None, "wrong"):
        assert isinstance(_utility(addresses[0], ["status"], password), UtilityException)
        assert isinstance(_utility(addresses[0], ["add", f"127.0.0.1:{find_free_port()}"], password),
                          UtilityException)
    status = _utility(addresses[0], ["status"], SECRET)
    assert status["partner_nodes_count"] == 2  # no member was added


class _CreatesAFile:
    """Unpickling it opens (creates) a file: what a stranger could make a
    member run if it unpickled what it is sent."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _send_raw(address: str, message: object) -> None:
    """One message framed as pysyncobj frames its own, unencrypted; returns
    when the member has closed the connection (after reading it)."""
    host, port = address.rsplit(":", 1)
    data = zlib.compress(pickle.dumps(message))
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(struct.pack("i", len(data)) + data)
        while sock.recv(4096):
            pass


def test_a_stranger_cannot_make_a_member_unpickle(tmp_path, group):
    """pysyncobj's messages are pickles: without a secret, whoever reaches the
    Raft port can run code in the sidecar (the control member shows it); with
    one, a message that does not decrypt is dropped before it is read."""
    addresses, _ = group
    target = tmp_path / "written-by-a-stranger"
    _send_raw(addresses[0], _CreatesAFile(str(target)))
    assert not target.exists()

    control_address = f"127.0.0.1:{find_free_port()}"
    control, _ = _member(tmp_path, "control", control_address, [], None)
    try:
        wait_until(lambda: control.getStatus()["leader"] is not None, 60, "the control member's election")
        _send_raw(control_address, _CreatesAFile(str(target)))
        assert target.exists()
    finally:
        control.destroy()


def test_the_password_file_is_checked(tmp_path):
    path = tmp_path / "raft.secret"
    path.write_text(SECRET + "\nignored\n")
    os.chmod(path, 0o600)
    assert read_raft_password(str(path)) == SECRET
    assert read_raft_password("") is None
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match=r'"ha.raft_password_file".*group or world access.*chmod 600'):
        read_raft_password(str(path))
    path.write_text("\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_raft_password(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        read_raft_password(str(tmp_path / "missing"))
