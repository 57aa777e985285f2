"""The ``sluice`` command: the API (``serve``), the processor (``process``), the schema
(``migrate``), per-tenant API keys (``keys``), Redis aggregates rebuilt from PostgreSQL
(``replay aggregates``) and the data quality of events (``validate file|kafka|postgres``).
Every command reads its settings from the ``SLUICE_*`` environment (:mod:`sluice.config`),
which the ``sluice`` role writes into env files; nothing secret is ever an argument.
``validate file`` needs no settings at all."""

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
    from sluice.cloudevents import Limits
    from sluice.config import Settings
    from sluice.quality.sources import Source


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
    new = key_commands.add_parser(
        "new",
        help="create a key per --tenant; each printed once (one per line, in order), stored hashed",
    )
    new.add_argument("--tenant", required=True, action="append", help="repeat for more keys")
    new.set_defaults(run=_keys_new)
    revoke = key_commands.add_parser("revoke", help="revoke keys by their ids")
    revoke.add_argument("key_ids", nargs="+", metavar="key_id")
    revoke.add_argument("--tenant", help="refuse unless the keys belong to this tenant")
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

    _validate_command(commands)

    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(arguments.run(arguments) or 0)
    except (ValueError, RuntimeError) as err:  # settings, migrations, keys: named problems
        print(f"sluice {arguments.command}: {err}", file=sys.stderr)
        return 2


def _validate_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sluice.quality.report import DEFAULT_EXAMPLES, DEFAULT_MIN_SCORE
    from sluice.quality.rules import UNKNOWN_TYPE_SEVERITIES

    judged = argparse.ArgumentParser(add_help=False)
    judged.add_argument("--format", choices=("text", "json"), default="text")
    judged.add_argument(
        "--min-score",
        type=_percentage,
        default=DEFAULT_MIN_SCORE,
        metavar="PERCENT",
        help="exit 1 when valid events are a smaller share (default: %(default)s)",
    )
    judged.add_argument(
        "--unknown-types",
        choices=UNKNOWN_TYPE_SEVERITIES,
        default="warning",
        help="how a type outside the study's mix counts (default: %(default)s, not scored)",
    )
    judged.add_argument(
        "--max-clock-skew-seconds",
        type=_positive,
        metavar="N",
        help="how far in the future a time may lie (default: SLUICE_MAX_CLOCK_SKEW_SECONDS "
        "for kafka and postgres, the service's default of 3600 for a file)",
    )
    judged.add_argument(
        "--examples",
        type=_positive_or_zero,
        default=DEFAULT_EXAMPLES,
        metavar="N",
        help="worst examples shown per rule (default: %(default)s)",
    )

    validate = commands.add_parser(
        "validate",
        help="score the data quality of events against the study's rules",
        description="Check events against the CloudEvents rules the service enforces and the "
        "business rules of the study's event types; report counts per rule, the share of "
        "valid events (the score), the worst examples and a fix per rule. Exit status 0 at "
        "or above --min-score, 1 below it (or when there is nothing to check), 2 for a "
        "usage or settings error.",
    )
    sources = validate.add_subparsers(dest="validate_source", required=True, metavar="SOURCE")

    file = sources.add_parser(
        "file",
        parents=[judged],
        help="events in a file: JSON lines, a JSON array, a query API page or one event",
    )
    file.add_argument("path", help="the file, or - for standard input")
    file.add_argument("--tenant", help="whose events these are (ids must be unique per tenant)")
    file.set_defaults(run=_validate_file)

    kafka = sources.add_parser(
        "kafka",
        parents=[judged],
        help="a bounded sample of a topic, read without committing offsets",
    )
    kafka.add_argument(
        "--topic", help="e.g. events.raw or events.dlq (default: SLUICE_KAFKA_TOPIC)"
    )
    kafka.add_argument(
        "--max-records", type=_positive, default=10_000, help="at most (default: %(default)s)"
    )
    kafka.add_argument(
        "--last",
        type=_positive,
        metavar="N",
        help="the last N records of each partition (default: from the start of each)",
    )
    kafka.add_argument(
        "--timeout-seconds",
        type=_positive,
        default=30,
        help="how long to read before reporting on what arrived (default: %(default)s)",
    )
    kafka.set_defaults(run=_validate_kafka)

    postgres = sources.add_parser(
        "postgres",
        parents=[judged],
        help="the stored events of a time range, read as the reader role",
    )
    postgres.add_argument(
        "--since", required=True, type=_timestamp, help="ISO 8601 with offset, inclusive"
    )
    postgres.add_argument(
        "--until", type=_timestamp, help="ISO 8601 with offset, exclusive (default: now)"
    )
    postgres.add_argument("--tenant", help="one tenant (default: every tenant)")
    postgres.add_argument(
        "--max-records", type=_positive, default=100_000, help="at most (default: %(default)s)"
    )
    postgres.set_defaults(run=_validate_postgres)


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


def _percentage(text: str) -> float:
    """A ``--min-score`` argument: a percentage from 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage from 0 to 100")
    return value


def _positive(text: str) -> int:
    """A count or a number of seconds: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _positive_or_zero(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


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
    """Every tenant named is checked before any key is stored: all or none."""
    from sluice.api.apikeys import new_key
    from sluice.storage.store import PgKeyStore, open_pool

    made = [new_key(tenant) for tenant in arguments.tenant]

    async def create() -> None:
        pool = await open_pool(_settings().postgres.writer_dsn, timeout=30.0)
        try:
            keys = PgKeyStore(pool)
            for _, stored in made:
                await keys.create(stored)
        finally:
            await pool.close()

    asyncio.run(create())
    for presented, stored in made:
        print(f"key id {stored.key_id} for tenant {stored.tenant} (shown once):", file=sys.stderr)
        print(presented, flush=True)
    return 0


def _keys_revoke(arguments: argparse.Namespace) -> int:
    from sluice.storage.store import PgKeyStore, open_pool

    async def revoke() -> list[str]:
        pool = await open_pool(_settings().postgres.writer_dsn, timeout=30.0)
        try:
            keys = PgKeyStore(pool)
            return [
                key_id
                for key_id in arguments.key_ids
                if not await keys.revoke(key_id, tenant=arguments.tenant)
            ]
        finally:
            await pool.close()

    missing = asyncio.run(revoke())
    for key_id in arguments.key_ids:
        if key_id in missing:
            print(f"sluice keys revoke: no active key {key_id}", file=sys.stderr)
        else:
            print(f"revoked {key_id}")
    return 1 if missing else 0


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


def _validate_file(arguments: argparse.Namespace) -> int:
    from sluice.cloudevents import Limits
    from sluice.quality.sources import FileSource

    return _validate(arguments, FileSource(arguments.path, arguments.tenant), Limits())


def _validate_kafka(arguments: argparse.Namespace) -> int:
    from sluice.adapters.kafka import KafkaSampler
    from sluice.quality.sources import KafkaSource

    settings = _settings()
    source = KafkaSource(
        KafkaSampler(settings.kafka),
        arguments.topic or settings.kafka.topic,
        max_records=arguments.max_records,
        last=arguments.last,
        timeout=arguments.timeout_seconds,
    )
    return _validate(arguments, source, settings.limits)


def _validate_postgres(arguments: argparse.Namespace) -> int:
    from sluice.quality.sources import PostgresSource, postgres_range

    settings = _settings()
    with postgres_range(settings) as pages:
        source = PostgresSource(
            pages,
            since=arguments.since,
            until=arguments.until or datetime.now(UTC),
            tenant=arguments.tenant,
            max_records=arguments.max_records,
        )
        return _validate(arguments, source, settings.limits)


def _validate(arguments: argparse.Namespace, source: Source, limits: Limits) -> int:
    """Report on ``source`` under the judging options; the exit status of the score."""
    from sluice.quality.report import render
    from sluice.quality.rules import Policy
    from sluice.quality.sources import run

    policy = Policy(
        now=datetime.now(UTC),
        max_clock_skew_seconds=arguments.max_clock_skew_seconds or limits.max_clock_skew_seconds,
        max_event_bytes=limits.max_event_bytes,
        unknown_types=arguments.unknown_types,
    )
    report = run(source, policy, min_score=arguments.min_score, examples=arguments.examples)
    print(render(report, arguments.format))
    return report.exit_code
