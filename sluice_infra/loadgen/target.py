"""What a load run asks of a deployed Sluice, through the operators' own tools on its hosts:
API keys made and revoked with the admin wrapper ``sluice keys`` (one process for all of a
run's tenants), the processors' consumer lag from ``kafka-consumer-groups``, SQL on the
PostgreSQL coordinator as the superuser (``psql`` over SSH, its data on stdin), and the
tenants' live counters from the API itself (``GET /api/v1/aggregates``).

Addresses and hosts come from the inventory (:class:`~sluice_infra.lab.layout.Layout`)."""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from sluice.api.apikeys import parse_key

from sluice_infra.lab.layout import Layout
from sluice_infra.lab.remote import Remote, RemoteError

ADMIN = "/usr/local/sbin/sluice"
KAFKA_ADMIN_PROPERTIES = "/etc/kafka/admin.properties"
PROCESSOR_GROUP = "sluice-processor"
RAW_TOPIC = "events.raw"


@dataclass(frozen=True)
class Key:
    tenant: str
    key_id: str
    secret: str  # the whole presented key: never printed, written only to a 0600 file


@dataclass(frozen=True)
class Target:
    layout: Layout
    remote: Remote

    @property
    def events_url(self) -> str:
        return f"{self.layout.api_url}/api/v1/events"

    def make_keys(self, tenants: list[str]) -> list[Key]:
        """One key per tenant, in order, from one ``sluice keys new`` on a processor host."""
        args = " ".join(f"--tenant {shlex.quote(t)}" for t in tenants)
        out = self.remote.run(self.layout.processor_host, f"sudo -n {ADMIN} keys new {args}")
        presented = out.split()
        if len(presented) != len(tenants):
            raise RemoteError(f"sluice keys new made {len(presented)} keys for {len(tenants)}")
        return [
            Key(tenant, parse_key(secret)[0], secret)
            for tenant, secret in zip(tenants, presented, strict=True)
        ]

    def revoke_keys(self, keys: list[Key]) -> None:
        if keys:
            ids = " ".join(key.key_id for key in keys)
            self.remote.run(self.layout.processor_host, f"sudo -n {ADMIN} keys revoke {ids}")

    def consumer_lag(self) -> dict[int, int]:
        """The processors' lag per partition of events.raw (records not yet committed); empty
        when the group has committed nothing yet."""
        node = self.layout.kafka_nodes[0]
        out = self.remote.run(
            node.host,
            f"sudo -n kafka-consumer-groups --bootstrap-server {node.endpoint('internal')} "
            f"--command-config {KAFKA_ADMIN_PROPERTIES} --describe --group {PROCESSOR_GROUP}",
        )
        lags = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[1] == RAW_TOPIC and fields[2].isdigit():
                current, end = fields[3], fields[4]
                lags[int(fields[2])] = int(end) - (int(current) if current != "-" else 0)
        return lags

    def sql_json(self, script: str) -> Any:
        """The JSON value the last statement of ``script`` selects, run by psql as the superuser
        on the coordinator from stdin (so a ``COPY ... FROM STDIN`` takes the lines after it)."""
        command = "cd / && sudo -n -u postgres psql -X -q -d sluice -tA -v ON_ERROR_STOP=1 -f -"
        out = self.remote.run(self.layout.database_host, command, stdin=script, timeout=1800)
        lines = [line for line in out.splitlines() if line.strip()]
        if not lines:
            raise RemoteError("psql printed nothing")
        return json.loads(lines[-1])

    def aggregates(self, key: Key, minutes: int) -> dict[str, Any]:
        """The tenant's live counters (Redis) for the last ``minutes`` minutes, via the API."""
        request = urllib.request.Request(
            f"{self.layout.api_url}/api/v1/aggregates?minutes={minutes}",
            headers={"Authorization": f"Bearer {key.secret}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return json.load(reply)
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteError(f"GET aggregates for tenant {key.tenant}: {exc}") from exc
