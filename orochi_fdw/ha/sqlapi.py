"""SQL functions of high availability (sql/75_ha.sql): they ask the local
orochi-sidecar's REST API, whose address the sidecar writes into the data
directory (a backend's working directory).  EXECUTE is granted to
pg_monitor only."""

from __future__ import annotations

import datetime
import json
import os
import urllib.error
import urllib.request
from typing import Any

from orochi_fdw.bridge.sqlfunc import sql_function
from orochi_fdw.errors import OrochiError

SIDECAR_FILE = "orochi_sidecar.json"


class SidecarUnavailable(OrochiError):
    """No orochi-sidecar with the ha duty answers for this server."""

    sqlstate = "55000"


def _get(path: str) -> Any:
    try:
        with open(os.path.join(os.getcwd(), SIDECAR_FILE), encoding="utf-8") as f:
            url = json.load(f)["api"]
    except (OSError, ValueError, KeyError):
        raise SidecarUnavailable("no orochi-sidecar with the ha duty runs for this server "
                                 f"({SIDECAR_FILE} is missing from the data directory)") from None
    if not url.startswith(("http://127.", "http://[::1]", "http://localhost")):
        raise SidecarUnavailable(f"the orochi-sidecar's REST API at {url} is not on the loopback interface")
    try:
        with urllib.request.urlopen(url + path, timeout=5) as response:
            return json.loads(response.read().decode())
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise SidecarUnavailable(f"the orochi-sidecar at {url} does not answer: {exc}") from None


def _ts(value: Any) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.fromtimestamp(value, datetime.timezone.utc)


@sql_function("raft_status")
def raft_status() -> list[tuple]:
    s = _get("/raft/status")
    return [(s["member_id"], s["state"], s["term"], s["commit_index"], s["last_applied"], s["leader"],
             s["has_quorum"], json.dumps(s["peers"]))]


@sql_function("raft_leader")
def raft_leader() -> str | None:
    return _get("/raft/leader")["leader"]


@sql_function("raft_cluster_info")
def raft_cluster_info() -> list[tuple]:
    c = _get("/cluster")
    rows = []
    for member, info in sorted(c["members"].items()):
        g = c["groups"].get(info["group"], {})
        last = next((h for h in reversed(c["history"]) if h["group"] == info["group"]), None)
        rows.append((info["group"], member, "primary" if g.get("primary") == member else "standby",
                     info["pg_host"], info["pg_port"], g.get("generation"), info.get("raft"),
                     _ts(last["at"]) if last else None))
    return rows


@sql_function("cluster_health")
def cluster_health() -> list[tuple]:
    return [(h["node_group"], h["member_id"], h["role"], h["host"], h["port"], h["reachable"], h["fenced"],
             h["lag_bytes"], h["sidecar"], h["generation"], _ts(h["last_failover_at"]))
            for h in _get("/cluster/health")["members"]]
