"""The ``sluice`` command: the API (``serve``), the processor (``process``), the schema
(``migrate``), per-tenant API keys (``keys``) and Redis aggregates rebuilt from PostgreSQL
(``replay aggregates``). Every command reads its settings from the ``SLUICE_*`` environment
(:mod:`sluice.config`), which the ``sluice`` role writes into env files; nothing secret is ever
an argument."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sluice import __version__
from sluice.derived.aggregates import DEFAULT_TTL_SECONDS

if TYPE_CHECKING:
    from sluice.config import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's arguments); the exit status."""
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice CloudEvents ingest.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("version", help="print the Sluice version").set_defaults(run=_version)

    serve = commands.add_parser("serve", help="run one API instance (SLUICE_BIND_HOST/PORT)")
    serve.add_argument("--port", type=int, help="overrides SLUICE_BIND_PORT")
    _metrics_port_option(serve, "the API's metrics (as its GET /metrics)")
    serve.add_argument(
        "--metrics-port-offset",
        type=int,
        metavar="N",
        help="serve the metrics on --port + N instead (one unit template for N instances)",
    )
    serve.set_defaults(run=_serve)

    process = commands.add_parser("process", help="run one processor (consumer group member)")
    _metrics_port_option(process, "the processor's metrics, consumer lag included")
    process.set_defaults(run=_process)

    migrate = commands.add_parser("migrate", help="bring the schema up to date (as the writer)")
    migrate.add_argument("--premake", type=int, default=7, help="days of partitions made ahead")
    migrate.set_defaults(run=_migrate)

    keys = commands.add_parser("keys", help="create and revoke per-tenant API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = key_commands.add_parser("new", help="create a key; printed once, stored hashed")
    new.add_argument("--tenant", required=True)
    new.set_defaults(run=_keys_new)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.add_argument("--tenant", help="refuse unless the key belongs to this tenant")
    revoke.set_defaults(run=_keys_revoke)

    replay = commands.add_parser("replay", help="rebuild derived data from PostgreSQL")
    replay_commands = replay.add_subparsers(dest="replay_command", required=True, metavar="WHAT")
    aggregates = replay_commands.add_parser(
        "aggregates",
        help="recount Redis aggregate buckets from stored events and set them absolutely",
        description="Recount the Redis aggregate buckets (every window) of the events in "
        "[--since, --until) from PostgreSQL and replace them; buckets partly in the range are "
        "widened to whole buckets. Safe to repeat.",
    )
    aggregates.add_argument("--tenant", help="one tenant (default: every tenant)")
    aggregates.add_argument(
        "--since", required=True, type=_timestamp, help="ISO 8601 with offset, inclusive"
    )
    aggregates.add_argument(
        "--until", type=_timestamp, help="ISO 8601 with offset, exclusive (default: now)"
    )
    aggregates.add_argument(
        "--ttl-seconds",
        type=int,
        default=DEFAULT_TTL_SECONDS,
        help="bucket lifetime from its start (default: the processors', %(default)s)",
    )
    aggregates.add_argument(
        "--dry-run", action="store_true", help="count and compare with Redis, write nothing"
    )
    aggregates.set_defaults(run=_replay_aggregates)

    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(arguments.run(arguments) or 0)
    except (ValueError, RuntimeError) as err:  # settings, migrations, keys: named problems
        print(f"sluice {arguments.command}: {err}", file=sys.stderr)
        return 2


def _metrics_port_option(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help=f"serve {what} at http://SLUICE_METRICS_HOST:PORT/metrics (default: not served)",
    )


def _port(text: str) -> int:
    """A ``--metrics-port`` argument: a TCP port number."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port number (1 to 65535)")
    return port


def _timestamp(text: str) -> datetime:
    """An ``--since``/``--until`` argument: ISO 8601 with a UTC offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 timestamp such as 2026-11-26T23:00:00Z"
        ) from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset: append Z (UTC) or one such as +02:00"
        )
    return moment


def _settings() -> Settings:
    """The settings from the environment; imported here so `sluice version` loads nothing."""
    from sluice.config import Settings

    return Settings.from_env()


def _version(_arguments: argparse.Namespace) -> int:
    print(__version__)
    return 0


def _serve(arguments: argparse.Namespace) -> int:
    from sluice.service import run_api

    settings = _settings()
    metrics_port = arguments.metrics_port
    if arguments.metrics_port_offset is not None:
        if metrics_port is not None:
            raise ValueError("give --metrics-port or --metrics-port-offset, not both")
        metrics_port = (arguments.port or settings.bind_port) + arguments.metrics_port_offset
        if not 1 <= metrics_port <= 65_535:
            raise ValueError(
                f"--metrics-port-offset {arguments.metrics_port_offset} puts the metrics on "
                f"{metrics_port}, which is not a TCP port number (1 to 65535)"
            )
    return run_api(settings, port=arguments.port, metrics_port=metrics_port)


def _process(arguments: argparse.Namespace) -> int:
    from sluice.service import run_processor

    return run_processor(_settings(), metrics_port=arguments.metrics_port)


def _migrate(arguments: argparse.Namespace) -> int:
    from sluice.storage.migrate import run

    report = run(_settings().postgres.writer_dsn, premake=arguments.premake)
    print(report.summary())
    # a machine-readable last line for the role's changed_when
    print(json.dumps({"changed": report.changed}))
    return 0


def _keys_new(arguments: argparse.Namespace) -> int:
    from sluice.api.apikeys import new_key
    from sluice.storage.store import PgKeyStore, open_pool

    async def create() -> str:
        presented, stored = new_key(arguments.tenant)
        pool = await open_pool(_settings().postgres.writer_dsn, timeout=30.0)
        try:
            await PgKeyStore(pool).create(stored)
        finally:
            await pool.close()
        print(f"key id {stored.key_id} for tenant {stored.tenant} (shown once):", file=sys.stderr)
        return presented

    print(asyncio.run(create()))
    return 0


def _keys_revoke(arguments: argparse.Namespace) -> int:
    from sluice.storage.store import PgKeyStore, open_pool

    async def revoke() -> bool:
        pool = await open_pool(_settings().postgres.writer_dsn, timeout=30.0)
        try:
            return await PgKeyStore(pool).revoke(arguments.key_id, tenant=arguments.tenant)
        finally:
            await pool.close()

    if not asyncio.run(revoke()):
        print(f"sluice keys revoke: no active key {arguments.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {arguments.key_id}")
    return 0


def _replay_aggregates(arguments: argparse.Namespace) -> int:
    from sluice.derived.replay import plan_aggregates, run_aggregates

    plan = plan_aggregates(
        arguments.since,
        arguments.until,
        now=datetime.now(UTC),
        tenant=arguments.tenant,
        ttl_seconds=arguments.ttl_seconds,
    )
    print("\n".join(plan.describe()), flush=True)
    report = run_aggregates(_settings(), plan, dry_run=arguments.dry_run)
    print(report.summary())
    # a machine-readable last line, as migrate prints
    print(report.json_line())
    return 0
