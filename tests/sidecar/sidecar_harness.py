"""orochi-sidecar as a real subprocess, for the sidecar tests (imported by
their conftest and by the tests themselves)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

SIDECAR = os.path.join(os.path.dirname(sys.executable), "orochi-sidecar")

#: settings of every test daemon: fast polls, a free port, quick reconnects
TEST_SETTINGS = """
log_level = "debug"
[http]
port = 0
[jobs]
poll_interval = 0.2
shutdown_grace = 5
client_check_interval = 0.5
[reconnect]
min_delay = 0.2
max_delay = 1.0
"""


class Sidecar:
    """One orochi-sidecar process; its stderr is collected line by line."""

    def __init__(self, dsn: str, config_path: str, extra_args: list[str], env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([SIDECAR, "--dsn", dsn, "--config", config_path, *extra_args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for_log(r"REST API listening on http://127\.0\.0\.1:(\d+)").group(1))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, pattern: str, timeout: float = 60.0, start: int = 0) -> re.Match:
        """The first log line from line ``start`` on matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                match = regex.search(line)
                if match:
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line matches {pattern!r}; log:\n{self.log()}")

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) of GET path."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def get_json(self, path: str) -> tuple[int, dict]:
        status, _, body = self.get(path)
        return status, json.loads(body)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
