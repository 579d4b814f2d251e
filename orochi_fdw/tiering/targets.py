"""Storage targets (``orochi.storage_target``) and their S3 clients.

A target is an endpoint, a bucket and a key prefix, with credentials that
only Orochi (as the extension owner) and superusers read: the catalog table
is granted to no one and ``orochi.storage_targets`` shows everything but
the credentials.  Clients are boto3's, made once per backend and target
definition, with boto3's ``standard`` retry mode (exponential backoff with
jitter on throttling, 5xx and connection errors) and the target's timeouts.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from orochi_fdw.bridge import spi
from orochi_fdw.catalog.errors import StorageIOError
from orochi_fdw.errors import InvalidParameterError, OrochiError

#: options a target takes besides the credentials
OPTION_NAMES = ("connect_timeout", "read_timeout", "max_attempts", "addressing_style", "max_pool_connections")
CREDENTIAL_NAMES = ("access_key_id", "secret_access_key")

#: how the catalog names an object: tier:<target id>/<key>
SCHEME = "tier:"


class TargetError(OrochiError):
    """A storage target that does not exist or cannot be used (SQLSTATE
    given per case)."""

    def __init__(self, message: str, sqlstate: str = "22023", hint: str | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint
        self.detail = detail


class ObjectStoreError(StorageIOError):
    """An object storage request failed after its retries (SQLSTATE 58030)."""


@dataclass(frozen=True)
class Target:
    target_id: int
    name: str
    owner: int
    endpoint: str | None
    bucket: str
    prefix: str
    region: str | None
    options: dict = field(hash=False, compare=False)
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    def key_prefix(self) -> str:
        p = self.prefix.strip("/")
        return p + "/" if p else ""

    def describe(self) -> str:
        return f'storage target "{self.name}" (bucket "{self.bucket}" at {self.endpoint or "AWS"})'


def object_path(target_id: int, key: str) -> str:
    """The catalog's name of an object."""
    return f"{SCHEME}{int(target_id)}/{key}"


def is_object_path(path: str) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def parse_object_path(path: str) -> tuple[int, str]:
    """(target id, key) of a catalog object name."""
    rest = path[len(SCHEME):]
    tid, _, key = rest.partition("/")
    return int(tid), key


# ---------------------------------------------------------------- catalog

_COLUMNS = ("target_id, name, owner, endpoint, bucket, prefix, region, options::text, "
            "access_key_id, secret_access_key")


def _target(row) -> Target:
    return Target(int(row[0]), row[1], int(row[2]), row[3], row[4], row[5] or "", row[6],
                  json.loads(row[7] or "{}"), row[8], row[9])


def by_name(name: str) -> Target:
    rows = spi.prepared(f"SELECT {_COLUMNS} FROM orochi.storage_target WHERE name = $1", ["text"],
                        internal=True).execute([name]).rows
    if not rows:
        raise TargetError(f'storage target "{name}" does not exist', "42704",
                          hint="orochi.storage_targets lists the storage targets.")
    return _target(rows[0])


def by_id(target_id: int) -> Target:
    rows = spi.prepared(f"SELECT {_COLUMNS} FROM orochi.storage_target WHERE target_id = $1", ["integer"],
                        internal=True).execute([int(target_id)]).rows
    if not rows:
        raise TargetError(f"storage target {target_id} does not exist (a stripe names it)", "42704")
    return _target(rows[0])


def all_targets() -> list[Target]:
    return [_target(r) for r in spi.execute(f"SELECT {_COLUMNS} FROM orochi.storage_target ORDER BY target_id",
                                            internal=True).rows]


def require_target_rights(target: Target) -> None:
    """The caller must have the rights of the target's owner (superusers do)."""
    ok = spi.execute("SELECT pg_catalog.pg_has_role($1, 'USAGE')", [target.owner], types=["oid"]).scalar()
    if not ok:
        raise TargetError(f'must be owner of storage target "{target.name}"', "42501")


def validate_options(options: Any) -> tuple[dict, str | None, str | None]:
    """(options without credentials, access key id, secret) of a target's
    options jsonb (text or dict).

    Raises:
        InvalidParameterError: not an object, an unknown option, a bad value.
    """
    if options is None:
        options = {}
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except ValueError as exc:
            raise InvalidParameterError(f"invalid options: {exc}") from None
    if not isinstance(options, dict):
        raise InvalidParameterError("options must be a JSON object")
    rest = {}
    for k, v in options.items():
        if k in CREDENTIAL_NAMES:
            continue
        if k not in OPTION_NAMES:
            raise TargetError(
                f'unknown storage target option "{k}"',
                hint="Valid options: " + ", ".join(OPTION_NAMES + CREDENTIAL_NAMES) + ".")
        if k in ("connect_timeout", "read_timeout"):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise InvalidParameterError(f'option "{k}" must be a positive number of seconds')
        elif k in ("max_attempts", "max_pool_connections"):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 100:
                raise InvalidParameterError(f'option "{k}" must be an integer between 1 and 100')
        elif k == "addressing_style" and v not in ("path", "virtual", "auto"):
            raise InvalidParameterError('option "addressing_style" must be "path", "virtual" or "auto"')
        rest[k] = v
    key_id, secret = options.get("access_key_id"), options.get("secret_access_key")
    for name, value in (("access_key_id", key_id), ("secret_access_key", secret)):
        if value is not None and not isinstance(value, str):
            raise InvalidParameterError(f'option "{name}" must be a string')
    if (key_id is None) != (secret is None):
        raise InvalidParameterError("access_key_id and secret_access_key go together")
    return rest, key_id, secret


# ---------------------------------------------------------------- clients

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def client(target: Target) -> Any:
    """A boto3 S3 client for the target (cached per definition)."""
    key = (target.target_id, target.endpoint, target.bucket, target.region, json.dumps(target.options, sort_keys=True),
           target.access_key_id, target.secret_access_key)
    with _clients_lock:
        c = _clients.get(key)
        if c is not None:
            return c
    import boto3
    from botocore.config import Config

    opts = target.options
    config = Config(
        retries={"mode": "standard", "max_attempts": int(opts.get("max_attempts", 4))},
        connect_timeout=float(opts.get("connect_timeout", 5)),
        read_timeout=float(opts.get("read_timeout", 30)),
        max_pool_connections=int(opts.get("max_pool_connections", 16)),
        s3={"addressing_style": opts.get("addressing_style", "path")},
    )
    session = boto3.session.Session()
    kwargs: dict[str, Any] = {"config": config, "region_name": target.region or "us-east-1"}
    if target.endpoint:
        kwargs["endpoint_url"] = target.endpoint
    if target.access_key_id is not None:
        kwargs["aws_access_key_id"] = target.access_key_id
        kwargs["aws_secret_access_key"] = target.secret_access_key
    c = session.client("s3", **kwargs)
    with _clients_lock:
        _clients[key] = c
    return c


def describe_error(target: Target, what: str, exc: BaseException) -> ObjectStoreError:
    """A clear error for a failed request (after boto3's retries)."""
    detail = f"{type(exc).__name__}: {exc}"
    return ObjectStoreError(
        f"could not {what} in {target.describe()}: {_short(exc)}",
        hint="The request was retried with backoff (the target's max_attempts option); "
             "check that the object store is reachable and the credentials are valid.",
        detail=detail)


def _short(exc: BaseException) -> str:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        err = resp.get("Error", {})
        code = err.get("Code")
        if code:
            return f"{code} ({err.get('Message') or 'no message'})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
