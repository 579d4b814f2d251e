"""The webhook sink: HTTP POST of event batches.

The body is a JSON array of events (in order); headers:

- ``Content-Type: application/json``
- ``X-Orochi-Signature: sha256=<hex>``: HMAC-SHA256 of the body with the
  ``secret`` option (when set), as GitHub signs its webhooks;
- ``X-Orochi-Subscription``, ``X-Orochi-First-Event``, ``X-Orochi-Last-Event``
  (event ids ``<commit lsn>:<index>``), and the ``headers`` option's.

A 2xx answer acknowledges the batch.  A timeout, a connection error, a 5xx
or a 429 leave it for another try (with a backoff; ``Retry-After`` is
honoured); any other 4xx refuses it: a batch of several events is split in
halves and sent again, so that only the events the receiver refuses go to
``orochi.cdc_errors`` (with the status and the answer), and the stream goes
on.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from orochi_fdw.cdc.events import Event, render_value
from orochi_fdw.cdc.sinks.base import Delivery, Refused, Sink, SinkUnavailable

#: bytes of a refused answer kept in orochi.cdc_errors
RESPONSE_KEEP = 4096


class WebhookSink(Sink):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.url = urlsplit(self.options["url"])
        self.path = (self.url.path or "/") + (f"?{self.url.query}" if self.url.query else "")
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            timeout = float(self.options["timeout"])
            if self.url.scheme == "https":
                self.conn = http.client.HTTPSConnection(self.url.hostname, self.url.port, timeout=timeout)
            else:
                self.conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=timeout)
        return self.conn

    def _drop_connection(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _post(self, events: list[Event], values: list[bytes]) -> tuple[int, bytes, dict[str, str]]:
        body = b"[" + b",".join(values) + b"]"
        headers = {"Content-Type": "application/json", "X-Orochi-Subscription": self.name,
                   "X-Orochi-First-Event": events[0].id, "X-Orochi-Last-Event": events[-1].id,
                   "User-Agent": "orochi-sidecar"}
        headers.update(self.options["headers"] or {})
        if self.options["secret"]:
            digest = hmac.new(self.options["secret"].encode(), body, hashlib.sha256).hexdigest()
            headers["X-Orochi-Signature"] = f"sha256={digest}"
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more, on a fresh one
            conn = self._connection()
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                answer = {k.lower(): v for k, v in response.getheaders()}
                if answer.get("connection", "").lower() == "close":
                    self._drop_connection()
                return response.status, data, answer
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if attempt == 2:
                    raise SinkUnavailable(f"the webhook closed the connection: {exc}") from None
            except (socket.timeout, TimeoutError):
                self._drop_connection()
                raise SinkUnavailable(f"the webhook did not answer within {self.options['timeout']} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise SinkUnavailable(f"the webhook cannot be reached: {exc}") from None
        raise AssertionError("unreachable")

    def deliver(self, events: list[Event]) -> Delivery:
        now_ms = int(time.time() * 1000)
        values = [render_value(e, self.ctx, now_ms) for e in events]
        result = Delivery()
        self._send(events, values, result)
        return result

    def _send(self, events: list[Event], values: list[bytes], result: Delivery) -> None:
        status, data, answer = self._post(events, values)
        if 200 <= status < 300:
            result.delivered += len(events)
            result.bytes += sum(len(v) for v in values)
            return
        if status == 429 or status >= 500 or status < 200:
            retry_after = None
            try:
                retry_after = float(answer.get("retry-after", ""))
            except ValueError:
                pass
            raise SinkUnavailable(f"the webhook answered {status}"
                                  + (f": {_text(data)[:200]}" if data else ""), retry_after)
        if status >= 400 and len(events) > 1:
            half = len(events) // 2
            self._send(events[:half], values[:half], result)
            self._send(events[half:], values[half:], result)
            return
        if status >= 400:
            result.refused.append(Refused(events[0], status, _text(data)[:RESPONSE_KEEP], values[0]))
            return
        raise SinkUnavailable(f"the webhook answered {status}")  # 1xx, 3xx: not an acknowledgement

    def close(self) -> None:
        self._drop_connection()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
