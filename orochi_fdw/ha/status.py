"""``orochi-sidecar --once status``: the HA cluster as the running sidecar
of this configuration sees it (its REST API), printed as a table;
``--once member-add ID=host:port`` / ``--once member-remove ID``: change the
Raft group's members through it."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from orochi_fdw.sidecar.config import Config


def api_url(config: Config) -> str | None:
    """The running sidecar's REST API: the configured port, or (port 0) the
    address it wrote into the data directory."""
    if config["http.port"]:
        return f"http://{config['http.host']}:{config['http.port']}"
    try:
        with open(os.path.join(config["ha.data_dir"], "orochi_sidecar.json"), encoding="utf-8") as f:
            return json.load(f)["api"]
    except (OSError, ValueError, KeyError):
        return None


def fetch(url: str, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url + path, timeout=timeout) as response:
        return json.loads(response.read().decode())


def print_status(config: Config, out: Any = None) -> int:
    out = out or sys.stdout
    url = api_url(config)
    if url is None:
        print("orochi-sidecar: no running sidecar found for this configuration", file=sys.stderr)
        return 1
    try:
        raft = fetch(url, "/raft/status")
        cluster = fetch(url, "/cluster")
        health = fetch(url, "/cluster/health")["members"]
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"orochi-sidecar: the sidecar at {url} does not answer: {exc}", file=sys.stderr)
        return 1
    print(f"member {raft['member_id']}: raft {raft['state']}, term {raft['term']}, leader {raft['leader']}, "
          f"commit index {raft['commit_index']}, last applied {raft['last_applied']}", file=out)
    header = ("group", "member", "role", "host:port", "reachable", "lag bytes", "sidecar", "generation")
    rows = [(h["node_group"], h["member_id"], h["role"] + (" (fenced)" if h.get("fenced") else ""),
             f"{h['host']}:{h['port']}", "yes" if h["reachable"] else "no",
             "" if h["lag_bytes"] is None else str(h["lag_bytes"]), h["sidecar"], str(h["generation"]))
            for h in health]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)
    for h in cluster["history"][-5:]:
        print(f"failover: group {h['group']} generation {h['generation']}: {h['old_primary']} -> "
              f"{h['new_primary']} ({h['reason']})", file=out)
    return 0


def change_members(config: Config, action: str, argument: str, out: Any = None) -> int:
    """``member-add ID=host:port`` or ``member-remove ID`` through the running
    sidecar of this configuration; 0 when done, 1 when refused or failed."""
    out = out or sys.stdout
    url = api_url(config)
    if url is None:
        print("orochi-sidecar: no running sidecar found for this configuration", file=sys.stderr)
        return 1
    if action == "member-add":
        member, sep, address = argument.partition("=")
        if not sep:
            print(f"orochi-sidecar: member-add expects ID=host:port, got {argument!r}", file=sys.stderr)
            return 2
        request = urllib.request.Request(url + "/raft/members", method="POST",
                                         data=json.dumps({"member_id": member.strip(),
                                                          "address": address.strip()}).encode(),
                                         headers={"Content-Type": "application/json"})
    else:
        request = urllib.request.Request(url + "/raft/members/" + urllib.parse.quote(argument, safe=""),
                                         method="DELETE")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read().decode()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        print(f"orochi-sidecar: {action} refused: {message}", file=sys.stderr)
        return 1
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"orochi-sidecar: the sidecar at {url} does not answer: {exc}", file=sys.stderr)
        return 1
    if action == "member-add":
        print(f"member {answer['added']} ({answer['address']}) added to the Raft group", file=out)
    else:
        print(f"member {answer['removed']} ({answer['address']}) removed from the Raft group", file=out)
    return 0
