"""The REST API, on the loopback interface by default.

- ``GET /health``: 200 and a JSON status when the last cycle reached
  Postgres, else 503 (also before the first cycle).
- ``GET /jobs``: the jobs and their statistics as of the last cycle (JSON).
- ``GET /pipelines``, ``GET /cdc``: the workers of those duties (JSON).
- ``GET /metrics``: Prometheus text exposition format.
- ``GET /raft/status``, ``/raft/leader``, ``/cluster``, ``/cluster/health``,
  ``/replication``: the ha duty's Raft node, replicated state, members'
  health and the local PostgreSQL's standbys (JSON; docs/ha.md).

- ``POST /raft/members`` (``{"member_id": ..., "address": "host:port"}``),
  ``DELETE /raft/members/<id>``: add or remove a member of the Raft group
  (``orochi-sidecar --once member-add`` / ``member-remove``).

Handlers are thin ``do_GET_<path>`` methods.  The two that change state
answer clients on the loopback interface only, whatever ``http.host`` is
(the one access check, as Patroni's unsafe endpoints have theirs).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from orochi_fdw.sidecar.daemon import Daemon

logger = logging.getLogger("orochi.sidecar.api")


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


class RestApiHandler(BaseHTTPRequestHandler):
    """Dispatches ``GET /<name>`` to ``do_GET_<name>``."""

    server: "RestApiServer"
    server_version = "orochi-sidecar"

    def do_GET(self) -> None:
        name = urlsplit(self.path).path.strip("/").replace("/", "_") or "health"
        handler = getattr(self, f"do_GET_{name}", None) if name.isidentifier() else None
        if handler is None:
            self._send_json(404, {"error": f"no such endpoint: {urlsplit(self.path).path}",
                                  "endpoints": ["/health", "/jobs", "/pipelines", "/cdc", "/metrics",
                                                "/raft/status", "/raft/leader", "/cluster", "/cluster/health",
                                                "/replication"]})
            return
        handler()

    def _local_client(self) -> bool:
        try:
            if ipaddress.ip_address(self.client_address[0]).is_loopback:
                return True
        except ValueError:
            pass
        self._send_json(403, {"error": "membership changes are accepted from the loopback interface only"})
        return False

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length).decode() or "{}") if length <= 65536 else None
        except ValueError:
            return None

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path != "/raft/members":
            self._send_json(404, {"error": f"no such endpoint: POST {path}"})
            return
        if not self._local_client():
            return
        body = self._body()
        if not isinstance(body, dict) or not isinstance(body.get("member_id"), str) \
                or not isinstance(body.get("address"), str):
            self._send_json(400, {"error": 'expected a JSON object {"member_id": "...", "address": "host:port"}'})
            return
        ha = self._ha()
        if ha is not None:
            code, answer = ha.add_member(body["member_id"], body["address"])
            self._send_json(code, answer)

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        prefix = "/raft/members/"
        if not path.startswith(prefix) or "/" in path[len(prefix):] or not path[len(prefix):]:
            self._send_json(404, {"error": f"no such endpoint: DELETE {path}"})
            return
        if not self._local_client():
            return
        ha = self._ha()
        if ha is not None:
            code, answer = ha.remove_member(unquote(path[len(prefix):]))
            self._send_json(code, answer)

    def do_GET_health(self) -> None:
        daemon = self.server.daemon_loop
        up = daemon.postgres_reachable()
        body = {
            "state": "stopping" if daemon.stopping else "running",
            "postgres": "up" if up else ("unknown" if daemon.last_cycle_at is None else "down"),
            "last_cycle_at": (datetime.datetime.fromtimestamp(daemon.last_cycle_at, datetime.timezone.utc)
                              if daemon.last_cycle_at else None),
            "last_status": daemon.last_status,
            "duties": [d.name for d in daemon.duties],
        }
        self._send_json(200 if up else 503, body)

    def do_GET_jobs(self) -> None:
        for duty in self.server.daemon_loop.duties:
            if duty.name == "jobs":
                self._send_json(200, duty.snapshot())
                return
        self._send_json(404, {"error": "the jobs duty is not enabled"})

    def do_GET_pipelines(self) -> None:
        for duty in self.server.daemon_loop.duties:
            if duty.name == "pipelines":
                self._send_json(200, duty.snapshot())
                return
        self._send_json(404, {"error": "the pipelines duty is not enabled"})

    def do_GET_cdc(self) -> None:
        for duty in self.server.daemon_loop.duties:
            if duty.name == "cdc":
                self._send_json(200, duty.snapshot())
                return
        self._send_json(404, {"error": "the cdc duty is not enabled"})

    def _ha(self) -> Any:
        for duty in self.server.daemon_loop.duties:
            if duty.name == "ha":
                return duty
        self._send_json(404, {"error": "the ha duty is not enabled"})
        return None

    def do_GET_raft_status(self) -> None:
        ha = self._ha()
        if ha is not None:
            self._send_json(200, ha.raft_status())

    def do_GET_raft_leader(self) -> None:
        ha = self._ha()
        if ha is not None:
            self._send_json(200, ha.raft_leader())

    def do_GET_cluster(self) -> None:
        ha = self._ha()
        if ha is not None:
            self._send_json(200, ha.cluster_info())

    def do_GET_cluster_health(self) -> None:
        ha = self._ha()
        if ha is not None:
            self._send_json(200, {"members": ha.health()})

    def do_GET_replication(self) -> None:
        ha = self._ha()
        if ha is not None:
            self._send_json(200, {"standbys": ha.replication()})

    def do_GET_metrics(self) -> None:
        self.server.daemon_loop.collect_metrics()
        registry = self.server.daemon_loop.context.metrics
        self._send(200, registry.render().encode(), registry.CONTENT_TYPE)

    def _send_json(self, code: int, body: Any) -> None:
        self._send(code, json.dumps(body, default=_json_default, indent=1).encode(), "application/json")

    def _send(self, code: int, payload: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)


class RestApiServer(ThreadingHTTPServer):
    """The HTTP server, in a thread of its own."""

    daemon_threads = True

    def __init__(self, daemon_loop: Daemon, host: str, port: int):
        self.daemon_loop = daemon_loop
        super().__init__((host, port), RestApiHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked when 0 was asked for)."""
        return int(self.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="rest-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()
