"""``orochi-sidecar``: command line, logging, signals and shutdown.

    orochi-sidecar --dsn 'postgresql://postgres@127.0.0.1:5432/app' [--config file.toml]
                   [--http-port N] [--log-level info] [--once]

Exit status: 0 after a clean shutdown (SIGTERM, SIGINT) or a ``--once``
cycle that reached Postgres; 1 when a ``--once`` cycle did not; 2 for a bad
configuration.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Sequence

from orochi_fdw.sidecar import config as configuration
from orochi_fdw.sidecar.api import RestApiServer
from orochi_fdw.sidecar.daemon import Daemon

logger = logging.getLogger("orochi.sidecar")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orochi-sidecar",
        description="Orochi's per-node daemon: runs due jobs and serves /health, /jobs and /metrics.")
    parser.add_argument("--dsn", help="connection string of the database (setting dsn)")
    parser.add_argument("--config", help="TOML configuration file (or OROCHI_SIDECAR_CONFIG)")
    parser.add_argument("--http-host", help="address of the REST API (setting http.host)")
    parser.add_argument("--http-port", type=int, help="port of the REST API, 0 = any free one (http.port)")
    parser.add_argument("--poll-interval", type=float, help="seconds between looks for due jobs "
                                                             "(jobs.poll_interval)")
    parser.add_argument("--log-level", choices=configuration.LOG_LEVELS, help="log level (log_level)")
    parser.add_argument("--once", nargs="*", metavar="COMMAND",
                        help="run one cycle of every duty, print its status and exit; "
                             "'--once status': print the HA cluster as the running sidecar sees it; "
                             "'--once member-add ID=host:port' / '--once member-remove ID': add or remove "
                             "a member of the Raft group through the running sidecar")
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon until SIGTERM / SIGINT (or one cycle with ``--once``).

    Returns:
        The exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    once = args.once
    if once is not None:
        if once in ([], ["cycle"]):
            args.once = "cycle"
        elif once == ["status"]:
            args.once = "status"
        elif len(once) == 2 and once[0] in ("member-add", "member-remove"):
            args.once = once[0]
        else:
            parser.error("--once takes nothing, 'status', 'member-add ID=host:port' or 'member-remove ID'")
    overrides = {"dsn": args.dsn, "http.host": args.http_host, "http.port": args.http_port,
                 "jobs.poll_interval": args.poll_interval, "log_level": args.log_level}
    try:
        config = configuration.load(args.config, overrides=overrides)
    except configuration.ConfigError as exc:
        print(f"orochi-sidecar: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config["log_level"])
    if args.once == "status":
        from orochi_fdw.ha.status import print_status
        return print_status(config)
    if args.once in ("member-add", "member-remove"):
        from orochi_fdw.ha.status import change_members
        return change_members(config, args.once, once[1])
    for key, shown in config.describe().items():
        logger.debug("setting %s = %s", key, shown)
    try:
        daemon = Daemon(config)
    except configuration.ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2

    if args.once:
        daemon.context.once = True
        status = daemon.run_cycle()
        print(status)
        daemon.close()
        return 0 if daemon.postgres_reachable() else 1

    api = None
    if config["http.enabled"]:
        try:
            api = RestApiServer(daemon, config["http.host"], config["http.port"])
        except OSError as exc:
            logger.error("cannot listen on %s:%s: %s", config["http.host"], config["http.port"], exc.strerror)
            daemon.close()
            return 1
        api.start()
        daemon.context.api_url = f"http://{config['http.host']}:{api.port}"
        logger.info("REST API listening on http://%s:%d", config["http.host"], api.port)

    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop_requested.set()
        daemon.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    loop = threading.Thread(target=daemon.run, name="daemon-loop")
    loop.start()
    logger.info("orochi-sidecar started with duties: %s", ", ".join(d.name for d in daemon.duties))
    while loop.is_alive() and not stop_requested.is_set():
        loop.join(0.2)
    grace = config["jobs.shutdown_grace"]
    loop.join(grace)
    if loop.is_alive():
        daemon.cancel_running()
        loop.join(10.0)
    if api is not None:
        api.stop()
    daemon.close()
    if loop.is_alive():
        logger.error("the daemon loop did not stop; exiting anyway")
        return 1
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
