"""What `make lab` ends with: real events pushed through HAProxy, then shown where they landed.

It makes an API key for a tenant of its own (``sudo sluice keys new`` on a processor host, as an
operator does), sends batches of CloudEvents to HAProxy on the first host of group sluice_api,
waits until every event is a row in PostgreSQL (counted on the coordinator by the superuser) and
counted in the Redis aggregates (through ``GET /api/v1/aggregates``, which reads the Redis
Functions counters), prints both, and revokes the key. Exit status 1 if any number differs.

    python -m sluice_infra.lab.demo -i inventories/lab [--events 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from sluice_infra.lab.lab import DEFAULT_STATE_DIR
from sluice_infra.lab.remote import Remote, RemoteError
from sluice_infra.settings import group_vars_all, role_default
from sluice_infra.summary import groups_by_host

TYPES = ("order.created", "order.paid", "order.shipped")
BATCH = 100


class DemoError(RuntimeError):
    """The demo could not run or its numbers differ; the message says where."""


@dataclass(frozen=True)
class Placement:
    api_address: str
    http_port: int
    key_host: str
    database_host: str


def placement(inventory: Path) -> Placement:
    """Where to send (HAProxy), where to make the key and where to count rows, from hosts.yml."""
    hosts_file = inventory / "hosts.yml"
    groups = groups_by_host(hosts_file)
    addresses = {
        name: (data or {}).get("ansible_host", name)
        for name, data in ((yaml.safe_load(hosts_file.read_text()) or {})["all"]["hosts"]).items()
    }
    members = {
        group: sorted(host for host, names in groups.items() if group in names)
        for group in ("sluice_api", "sluice_processor", "citus_coordinator")
    }
    empty = [group for group, hosts in members.items() if not hosts]
    if empty:
        raise DemoError(f"{hosts_file}: no host in group(s) {', '.join(empty)}")
    settings = group_vars_all(inventory)
    http_port = settings.get("sluice_http_port", role_default("sluice", "sluice_http_port"))
    return Placement(
        api_address=addresses[members["sluice_api"][0]],
        http_port=int(http_port),
        key_host=members["sluice_processor"][0],
        database_host=members["citus_coordinator"][0],
    )


def events(count: int, now: datetime) -> list[dict]:
    """``count`` CloudEvents cycling through TYPES, each with its own id."""
    stamp = now.isoformat().replace("+00:00", "Z")
    return [
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/make-lab",
            "type": TYPES[i % len(TYPES)],
            "subject": f"order-{i // len(TYPES)}",
            "time": stamp,
            "data": {"amount": i},
        }
        for i in range(count)
    ]


def _request(url: str, key: str, body: bytes | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/cloudevents-batch+json"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError as exc:
        raise DemoError(f"{url}: {exc}; is HAProxy up (make deploy)?") from exc


def _wait(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def run(inventory: Path, count: int, remote: Remote, out=sys.stdout) -> None:
    where = placement(inventory)
    tenant = f"lab-demo-{datetime.now(UTC):%Y%m%d%H%M%S}"
    made = remote.run(
        where.key_host, f"sudo -n /usr/local/sbin/sluice keys new --tenant {tenant} 2>&1"
    )
    key = made.strip().splitlines()[-1]
    key_id = made.split("key id ", 1)[1].split()[0] if "key id " in made else None
    base = f"http://{where.api_address}:{where.http_port}/api/v1"
    try:
        sent = events(count, datetime.now(UTC))
        started = time.monotonic()
        for first in range(0, count, BATCH):
            status, reply = _request(
                f"{base}/events", key, json.dumps(sent[first : first + BATCH]).encode()
            )
            if status != 202:
                raise DemoError(f"POST {base}/events answered {status}: {reply}")
        took = time.monotonic() - started
        print(f"sent {count} events to HAProxy {base} as tenant {tenant}: all 202 in {took:.1f}s",
              file=out)  # fmt: skip
        expected = Counter(event["type"] for event in sent)

        rows: Counter = Counter()
        sql = f"SELECT type, count(*) FROM events WHERE tenant_id = '{tenant}' GROUP BY type"
        psql = f'cd / && sudo -n -u postgres psql -d sluice -tAF " " -c "{sql}"'

        def stored() -> bool:
            nonlocal rows
            lines = remote.run(where.database_host, psql).split("\n")
            rows = Counter({t: int(n) for t, n in (line.split() for line in lines if line.strip())})
            return sum(rows.values()) >= count

        _wait(f"{count} rows in PostgreSQL", stored, timeout=180)
        counted: dict = {}

        def aggregated() -> bool:
            nonlocal counted
            status, counted = _request(f"{base}/aggregates?minutes=10", key)
            return status == 200 and counted.get("total", 0) >= count

        _wait(f"{count} events in the Redis counters", aggregated, timeout=60)
        print(f"{'type':<16}{'sent':>8}{'PostgreSQL rows':>18}{'Redis count':>14}", file=out)
        for kind in TYPES:
            print(f"{kind:<16}{expected[kind]:>8}{rows[kind]:>18}"
                  f"{counted['totals'].get(kind, 0):>14}", file=out)  # fmt: skip
        if rows != expected or counted["totals"] != dict(expected):
            raise DemoError("the stored or counted events differ from those sent (table above)")
        print("every event landed once in PostgreSQL and in the Redis counters", file=out)
    finally:
        if key_id:
            remote.run(where.key_host, f"sudo -n /usr/local/sbin/sluice keys revoke {key_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice_infra.lab.demo", description=__doc__)
    parser.add_argument("-i", "--inventory", type=Path, default=Path("inventories/lab"))
    parser.add_argument("--events", type=int, default=1000, help="how many to send (1000)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    try:
        run(args.inventory, args.events, Remote(args.state_dir))
    except (DemoError, RemoteError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
