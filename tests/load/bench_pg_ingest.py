"""Benchmark event ingest into PostgreSQL on the lab: 500-byte CloudEvents with a JSONB payload
into a daily-partitioned table (pg_partman, BRIN on time, composite B-tree), the table shape the
processor writes. Three ways, in batches as the processor sends them:

- COPY straight into the table;
- COPY into a temporary staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING (the
  idempotent path: a redelivered batch adds nothing);
- multi-row INSERT ... VALUES ... ON CONFLICT DO NOTHING.

Writes docs/bench/postgresql-ingest.md. The client runs on the coordinator/main cluster's host
as postgres over the local socket (no password anywhere), in a throwaway schema dropped
afterwards.

    make bench-postgresql
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

import yaml

from sluice_infra.lab.remote import Remote
from sluice_infra.settings import group_vars_all, role_default

REPO = Path(__file__).resolve().parents[2]
#: The study's target: 400,000 events per minute.
TARGET_PER_SECOND = 400_000 / 60

#: Runs on the database host (python3-psycopg2 is there, from the role); prints JSON.
CLIENT = Path(__file__).with_name("pg_ingest_client.py")

LABELS = {
    "copy": "COPY",
    "copy_staged_on_conflict": "COPY to staging + INSERT ON CONFLICT DO NOTHING",
    "insert_values_on_conflict": "multi-row INSERT ON CONFLICT DO NOTHING",
}


def report(args: argparse.Namespace, host: str, measured: dict, standbys: list[str]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    standby = (
        f" (a streaming standby on {', '.join(standbys)} receives the WAL)" if standbys else ""
    )
    rows = "\n".join(
        f"| {LABELS[name]} | {r['rows']:,} | {r['seconds']:.1f} | {r['rate']:,.0f} | "
        f"{r['rate'] * 60:,.0f} | {r['rate'] / TARGET_PER_SECOND:.1f}x | {r['row_bytes']} | "
        f"{r['after_redelivery'] == r['rows']} |"
        for name, r in measured["results"].items()
    )
    return f"""# PostgreSQL: event ingest, COPY vs multi-row INSERT

Measured {now} by `make bench-postgresql` (tests/load/bench_pg_ingest.py) on a build host with
{os.cpu_count()} cores shared by all three lab machines. Server: PostgreSQL {measured["server"]};
pg_partman {measured["partman"]}; inventory `{args.inventory.name}`{standby}. The client runs on
`{host}`, the cluster's own machine, as
postgres over the local socket, one connection, one transaction per batch of {args.batch} events.

Table: the processor's shape, `(tenant_id, id, source, type, subject, time, payload jsonb)`, primary
key `(tenant_id, id, time)`, partitioned by day with pg_partman, BRIN on `time` and a B-tree on
`(tenant_id, type, time)`. Each event is about {args.size} bytes of CloudEvent (`row bytes`:
PostgreSQL's stored size of a row); {args.events:,} events per method, 20 tenants, times spread
over the last hour. After each run the first batch is sent again: `redelivery adds nothing` says
the row count did not change.

| method | rows | seconds | rows/s | rows/min | vs 400k/min | row bytes | redelivery adds nothing |
|---|---:|---:|---:|---:|---:|---:|---|
{rows}

The study's target is 400,000 events/min ({TARGET_PER_SECOND:,.0f}/s). Read the figures as
relative: on this host the client, the server and the other lab machines share {os.cpu_count()}
cores; production gives the coordinator 8 vCPUs and spreads the table over Citus workers.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, default=REPO / "inventories" / "lab")
    parser.add_argument("--events", type=int, default=200_000, help="events per method")
    parser.add_argument("--batch", type=int, default=1000, help="events per transaction")
    parser.add_argument("--size", type=int, default=500, help="bytes per event, about")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "bench" / "postgresql-ingest.md"
    )
    args = parser.parse_args()

    inventory = yaml.safe_load((args.inventory / "hosts.yml").read_text())["all"]
    host = next(iter(inventory["children"]["citus_coordinator"]["hosts"]))
    group_vars = group_vars_all(args.inventory)
    port = int(
        group_vars.get("postgresql_port_base", role_default("postgresql", "postgresql_port_base"))
    )
    standbys = list(group_vars.get("postgresql_standby_hosts") or [])
    output = Remote().run(
        host,
        f"cd / && sudo -n -u postgres python3 - {port} {args.events} {args.batch} {args.size}",
        stdin=CLIENT.read_text(),
        timeout=3600,
    )
    measured = json.loads(output.strip().splitlines()[-1])
    for name, result in measured["results"].items():
        print(f"{LABELS[name]}: {result['rate']:,.0f} rows/s")
    args.out.write_text(report(args, host, measured, standbys))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
