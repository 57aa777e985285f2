"""Role sluice: the API instances serve behind HAProxy and only behind it, the processors run,
the settings file keeps its secrets from other users, and the admin wrapper works.

Runs on every host; the checks skip on hosts outside groups sluice_api and sluice_processor."""

from __future__ import annotations

import json
import time

import pytest

from sluice_infra.settings import role_default

pytestmark = pytest.mark.system


def _vars(host) -> dict:
    return host.ansible.get_variables()


def _setting(host, name: str) -> int:
    """The value the role used: the inventory's, else the role's default."""
    return int(_vars(host).get(name, role_default("sluice", name)))


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
    url = f"http://{_vars(api_host)['ansible_host']}:{_setting(api_host, 'sluice_http_port')}"
    status = api_host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {url}/readyz")
    assert status == "200"
    health = json.loads(api_host.check_output(f"curl -s {url}/readyz"))
    assert all(health["checks"].values()), health


def test_every_api_instance_is_up_in_haproxy(api_host):
    ports = _api_ports(api_host)
    assert len(ports) >= 2, ports  # a rolling restart keeps one serving
    for port in ports:
        state = json.loads(
            api_host.check_output(f"sudo -n /usr/local/sbin/sluice-haproxy status api{port}")
        )
        assert state["status"].startswith("UP"), state


def _api_ports(api_host) -> list[int]:
    units = api_host.check_output(
        "systemctl list-units --plain --no-legend --state=active 'sluice-api@*'"
    )
    return sorted(int(line.split()[0].split("@")[1].split(".")[0]) for line in units.splitlines())


def test_api_instances_listen_on_loopback_only(api_host):
    ports = _api_ports(api_host)
    assert ports, "no sluice-api@ instance runs"
    listening = [s for s in api_host.socket.get_listening_sockets() if s.startswith("tcp")]
    for port in ports:
        bound = [s for s in listening if s.rsplit(":", 1)[1] == str(port)]
        assert bound == ["tcp://127.0.0.1:" + str(port)], (port, bound)


def test_processors_run_and_report_their_consumer_lag(processor_host):
    units = processor_host.check_output(
        "systemctl list-units --plain --no-legend --state=active 'sluice-processor@*'"
    )
    assert units.splitlines(), "no sluice-processor@ instance runs"
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
    offset = _setting(api_host, "sluice_api_metrics_port_base") - _setting(
        api_host, "sluice_api_port_base"
    )
    ports = _api_ports(api_host)
    assert ports, "no sluice-api@ instance runs"
    for port in ports:
        metrics = api_host.check_output(f"curl -sf http://127.0.0.1:{port + offset}/metrics")
        assert "sluice_http_requests_total" in metrics, port


def test_settings_are_readable_by_root_and_the_service_only(host):
    names = [
        name
        for name, group in (("api", "sluice_api"), ("processor", "sluice_processor"))
        if _in_group(host, group)
    ]
    if not names:
        pytest.skip("no Sluice on this host")
    for name in names:
        # /etc/sluice is closed to the login user too: look as root
        owner = host.run(f"sudo -n stat -c '%U %G %a' /etc/sluice/{name}.env")
        assert owner.rc == 0, f"/etc/sluice/{name}.env is missing: {owner.stderr}"
        assert owner.stdout.split() == ["root", "sluice", "640"], owner.stdout
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
