"""Benchmark the Redis Functions aggregation path (FCALL sluice_aggregate) on the lab cluster.

Runs redis-benchmark on the first Redis host, one process per master at the same time, each
with keys in that master's slots, and writes docs/bench/redis-functions.md. It uses a
throwaway ACL user (random password, removed afterwards, allowed only the sluice:bench: keys),
because redis-benchmark takes its password on the command line.

    make bench-redis
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from sluice_infra.lab.remote import Remote, RemoteError

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, default=REPO / "inventories" / "lab")
    parser.add_argument("--host", default="stream", help="Redis host to run redis-benchmark on")
    parser.add_argument("--requests", type=int, default=100_000, help="per master")
    parser.add_argument("--clients", type=int, default=50, help="connections per master")
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "redis-functions.md")
    args = parser.parse_args()

    hosts = yaml.safe_load((args.inventory / "hosts.yml").read_text())["all"]["hosts"]
    address = hosts[args.host]["ansible_host"]
    remote = Remote()
    password = remote.vault(args.inventory)["vault_redis_admin_password"]

    def admin(host_address: str, port: int, *command: str) -> str:
        return remote.redis_cli(args.host, "admin", password, host_address, port, *command)

    nodes = [line.split() for line in admin(address, 7000, "CLUSTER", "NODES").splitlines()]
    masters = [n for n in nodes if "master" in n[2] and len(n) > 8]
    endpoints = [n[1].split("@")[0] for n in nodes]

    # a tenant tag whose keys live on each master
    tags: dict[str, str] = {}
    for i in range(10_000):
        slot = int(admin(address, 7000, "CLUSTER", "KEYSLOT", f"t{i}"))
        for master in masters:
            first, last = (int(x) for x in master[8].split("-"))
            if first <= slot <= last and master[1] not in tags:
                tags[master[1]] = f"t{i}"
        if len(tags) == len(masters):
            break

    user, token = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    rules = (
        f"on >{token} ~sluice:bench:* ~sluice:{{t*}}:bench:* +fcall +hincrby +expire +ping +info"
    )
    for endpoint in endpoints:  # ACLs are per node
        host_address, port = endpoint.rsplit(":", 1)
        admin(host_address, int(port), "ACL", "SETUSER", user, *rules.split())
    try:

        def one(master: list[str]) -> dict:
            host_address, port = master[1].split("@")[0].rsplit(":", 1)
            key = f"sluice:{{{tags[master[1]]}}}:bench:agg"
            out = remote.run(
                args.host,
                f"redis-benchmark -h {host_address} -p {port} --user {user} -a {token} "
                f"-c {args.clients} -n {args.requests} -P {args.pipeline} -r 50 --csv "
                f"FCALL sluice_aggregate 1 '{key}' type.__rand_int__ 1 3600",
            )
            row = next(csv.DictReader(io.StringIO(out)))
            return {"master": master[1].split("@")[0], **row}

        with ThreadPoolExecutor(len(masters)) as pool:
            rows = list(pool.map(one, masters))
    finally:
        for endpoint in endpoints:
            host_address, port = endpoint.rsplit(":", 1)
            admin(host_address, int(port), "ACL", "DELUSER", user)
        for master in masters:
            host_address, port = master[1].split("@")[0].rsplit(":", 1)
            key = f"sluice:{{{tags[master[1]]}}}:bench:agg"
            admin(host_address, int(port), "DEL", key)

    total = sum(float(r["rps"]) for r in rows)
    cores = os.cpu_count()
    lines = [
        "# Redis Functions: FCALL sluice_aggregate on the lab cluster",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `make bench-redis` "
        f"(tests/load/bench_redis_functions.py) on a build host with {cores} cores, all three "
        "lab machines sharing them; redis-benchmark runs on the Redis host itself.",
        "",
        f"Each master gets {args.requests:,} FCALLs from {args.clients} connections "
        f"(pipeline {args.pipeline}), all masters at once; 50 event types per tenant bucket.",
        "",
        "| master | requests/s | avg ms | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['master']} | {float(r['rps']):,.0f} | {r['avg_latency_ms']} | "
            f"{r['p50_latency_ms']} | {r['p95_latency_ms']} | {r['p99_latency_ms']} | "
            f"{r['max_latency_ms']} |"
        )
    lines += [
        f"| **cluster** | **{total:,.0f}** | | | | | |",
        "",
        f"The study's target is 400,000 events/minute = {400_000 / 60:,.0f} events/s; one "
        "FCALL aggregates one event (batching several events per call is possible).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RemoteError as exc:
        raise SystemExit(f"bench: {exc}") from None
