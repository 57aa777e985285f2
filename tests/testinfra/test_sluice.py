"""Role sluice: the API instances serve behind HAProxy and only behind it, the processors run,
the settings file keeps its secrets from other users, and the admin wrapper works.

Runs on every host; the checks skip on hosts outside groups sluice_api and sluice_processor."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.system


def _vars(host) -> dict:
    return host.ansible.get_variables()


def _in_group(host, group: str) -> bool:
    return host.backend.get_hostname() in _vars(host)["groups"].get(group, [])


@pytest.fixture
def api_host(host):
    if not _in_group(host, "sluice_api"):
        pytest.skip("no Sluice API on this host")
    return host


@pytest.fixture
def processor_host(host):
    if not _in_group(host, "sluice_processor"):
        pytest.skip("no Sluice processor on this host")
    return host


def test_haproxy_answers_ready_for_the_instances(api_host):
    address = _vars(api_host)["ansible_host"]
    status = api_host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' http://{address}:8080/readyz"
    )
    assert status == "200"
    health = json.loads(api_host.check_output(f"curl -s http://{address}:8080/readyz"))
    assert all(health["checks"].values()), health


def test_every_api_instance_is_up_in_haproxy(api_host):
    units = api_host.check_output(
        "systemctl list-units --plain --no-legend --state=active 'sluice-api@*'"
    )
    ports = sorted(int(unit.split("@")[1].split(".")[0]) for unit in units.splitlines())
    assert len(ports) >= 2, units  # a rolling restart keeps one serving
    for port in ports:
        state = json.loads(
            api_host.check_output(f"sudo -n /usr/local/sbin/sluice-haproxy status api{port}")
        )
        assert state["status"].startswith("UP"), state


def test_api_instances_listen_on_loopback_only(api_host):
    for socket in api_host.socket.get_listening_sockets():
        if socket.startswith("tcp://") and ":81" in socket:
            port = int(socket.rsplit(":", 1)[1])
            if 8101 <= port <= 8199:
                assert socket.startswith("tcp://127.0.0.1:"), socket


def test_processors_run_and_report_their_consumer_lag(processor_host):
    units = processor_host.check_output(
        "systemctl list-units --plain --no-legend --state=active 'sluice-processor@*'"
    )
    assert len(units.splitlines()) >= 1, units
    for line in units.splitlines():
        unit = line.split()[0]
        restarts = processor_host.check_output(f"systemctl show --property=NRestarts {unit}")
        assert restarts == "NRestarts=0", (unit, restarts)
        port = int(unit.split("@")[1].split(".")[0])
        # librdkafka reports every 15 s; a member with partitions has a lag series for each
        metrics = ""
        for _ in range(25):
            metrics = processor_host.check_output(f"curl -sf http://127.0.0.1:{port}/metrics")
            if "sluice_processor_consumer_lag{" in metrics:
                break
            time.sleep(2)
        assert "sluice_processor_batches_total" in metrics
        assert "sluice_processor_consumer_lag{" in metrics, f"no lag reported by {unit}"


def test_api_instances_serve_their_metrics(api_host):
    vars_ = _vars(api_host)
    offset = int(vars_.get("sluice_api_metrics_port_base", 9400)) - 8100
    units = api_host.check_output(
        "systemctl list-units --plain --no-legend --state=active 'sluice-api@*'"
    )
    for line in units.splitlines():
        port = int(line.split()[0].split("@")[1].split(".")[0])
        metrics = api_host.check_output(f"curl -sf http://127.0.0.1:{port + offset}/metrics")
        assert "sluice_http_requests_total" in metrics, port


def test_settings_are_readable_by_root_and_the_service_only(host):
    if not (_in_group(host, "sluice_api") or _in_group(host, "sluice_processor")):
        pytest.skip("no Sluice on this host")
    for name in ("api", "processor"):
        settings = host.file(f"/etc/sluice/{name}.env")
        if settings.exists:
            assert (settings.user, settings.group, settings.mode) == ("root", "sluice", 0o640)
    for name in ("api", "processor"):
        # another user (nobody) cannot read it; output discarded: it holds secrets
        probe = f"sudo -n -u nobody cat /etc/sluice/{name}.env >/dev/null 2>&1; echo $?"
        assert host.check_output(probe) != "0"


def test_the_admin_wrapper_runs_the_current_release(processor_host):
    version = processor_host.check_output("sudo -n /usr/local/sbin/sluice version")
    current = processor_host.file("/opt/sluice/current").linked_to
    assert current.rsplit("/", 1)[1].startswith(version + "-"), (version, current)
    assert processor_host.file(f"{current}/.complete").exists


def test_the_schema_is_up_to_date(processor_host):
    out = processor_host.check_output("sudo -n /usr/local/sbin/sluice migrate")
    assert json.loads(out.splitlines()[-1])["changed"] is False


def test_the_api_holds_no_database_write_credential(api_host):
    # the API reads as sluice_reader; only the processors' file has the writer's password
    count = api_host.run("sudo -n grep -c '^SLUICE_POSTGRES_WRITER_PASSWORD=' /etc/sluice/api.env")
    assert count.stdout.strip() == "0", count.stdout
