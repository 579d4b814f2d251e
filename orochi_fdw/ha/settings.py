"""Checks of the ``ha.*`` settings that span several keys, each error naming
the key at fault (the single values are checked by the sidecar's schema)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from orochi_fdw.sidecar.config import ConfigError

_ID = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})")


@dataclass(frozen=True)
class Peer:
    """One member of the Raft group."""

    member_id: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_peers(items: list[str], source: str = "") -> dict[str, Peer]:
    """``["a=127.0.0.1:7001", ...]`` by member id.

    Raises:
        ConfigError: an item that is not ``id=host:port``, a duplicate member
            id or a duplicate address (naming ``ha.peers``).
    """
    where = f" ({source})" if source else ""
    peers: dict[str, Peer] = {}
    addresses: dict[str, str] = {}
    for item in items:
        member, sep, address = item.partition("=")
        match = _ADDRESS.fullmatch(address.strip())
        if not sep or not _ID.fullmatch(member.strip()) or not match or not 0 < int(match["port"]) < 65536:
            raise ConfigError(f'invalid value for "ha.peers"{where}: expected "id=host:port" '
                              f"(id of letters, digits, _ . -), got {item!r}")
        member = member.strip()
        peer = Peer(member, match["host"].strip("[]"), int(match["port"]))
        if member in peers:
            raise ConfigError(f'invalid value for "ha.peers"{where}: duplicate member id {member!r}')
        if peer.address in addresses:
            raise ConfigError(f'invalid value for "ha.peers"{where}: members {addresses[peer.address]!r} and '
                              f"{member!r} have the same address {peer.address}")
        peers[member] = peer
        addresses[peer.address] = member
    return peers


def read_raft_password(path: str, source: str = "") -> str | None:
    """The Raft group's shared secret: the first line of ``path`` (None when unset).

    Raises:
        ConfigError: a file that cannot be read, is empty, or can be read by
            its group or others (naming ``ha.raft_password_file``).
    """
    if not path:
        return None
    where = f" ({source})" if source else ""
    key = '"ha.raft_password_file"'
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as f:
            secret = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"invalid value for {key}{where}: cannot read {path!r}: {exc}") from None
    if mode & 0o077:
        raise ConfigError(f"invalid value for {key}{where}: {path!r} has group or world access "
                          f"(mode {mode & 0o777:o}); it must be readable by its owner only (chmod 600)")
    if not secret:
        raise ConfigError(f"invalid value for {key}{where}: {path!r} is empty (the secret is its first line)")
    return secret


def journal_path(journal_dir: str) -> str:
    return os.path.join(journal_dir, "raft.journal")


def check_ha_settings(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Cross-key checks of the ``ha`` duty's settings.

    Raises:
        ConfigError: the first problem found, naming its key.
    """
    def src(key: str) -> str:
        return sources.get(key, "default")

    for key in ("ha.member_id", "ha.data_dir", "ha.journal_dir"):
        if not values[key]:
            raise ConfigError(f'"{key}" is required by the ha duty')
    if not values["ha.raft_password_file"]:
        raise ConfigError('"ha.raft_password_file" is required by the ha duty: Raft messages are Python '
                          "pickles, so a Raft port without a shared secret lets whoever reaches it run code "
                          "in the sidecar (docs/ha.md)")
    if len(values["ha.peers"]) < 1:
        raise ConfigError('"ha.peers" is required by the ha duty: list every member as "id=host:port"')
    peers = parse_peers(values["ha.peers"], src("ha.peers"))
    member = values["ha.member_id"]
    if member not in peers:
        raise ConfigError(f'invalid value for "ha.member_id" ({src("ha.member_id")}): unknown peer {member!r}; '
                          f'"ha.peers" lists {", ".join(sorted(peers))}')
    if values["ha.raft_min_timeout"] >= values["ha.raft_max_timeout"]:
        raise ConfigError('"ha.raft_min_timeout" must be below "ha.raft_max_timeout"')
    if values["ha.lease_ttl"] < 4 * values["ha.renew_interval"]:
        raise ConfigError(f'"ha.lease_ttl" ({values["ha.lease_ttl"]}) must be at least 4 times '
                          f'"ha.renew_interval" ({values["ha.renew_interval"]})')
    if values["ha.lease_ttl"] <= 2 * values["ha.raft_max_timeout"]:
        raise ConfigError(f'"ha.lease_ttl" ({values["ha.lease_ttl"]}) must exceed twice '
                          f'"ha.raft_max_timeout" ({values["ha.raft_max_timeout"]}): a primary would fence '
                          "itself during every Raft election")
    read_raft_password(values["ha.raft_password_file"], src("ha.raft_password_file"))
    data_dir = values["ha.data_dir"]
    if not os.path.isfile(os.path.join(data_dir, "PG_VERSION")):
        raise ConfigError(f'invalid value for "ha.data_dir" ({src("ha.data_dir")}): {data_dir!r} is not a '
                          "PostgreSQL data directory (no PG_VERSION)")
    if not os.path.exists(journal_path(values["ha.journal_dir"])):
        # a member joining for the first time: its data directory must be what it says
        standby = os.path.exists(os.path.join(data_dir, "standby.signal"))
        role = values["ha.initial_role"]
        if role == "standby" and not standby:
            raise ConfigError(f'invalid value for "ha.data_dir" ({src("ha.data_dir")}): {data_dir!r} is not a '
                              f'standby (no standby.signal), but "ha.initial_role" is "standby"; make it with '
                              "pg_basebackup -R from the primary")
        if role == "primary" and standby:
            raise ConfigError(f'invalid value for "ha.data_dir" ({src("ha.data_dir")}): {data_dir!r} is a '
                              'standby (standby.signal), but "ha.initial_role" is "primary"')
