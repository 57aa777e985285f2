"""site.yml on the lab: converges, a second run changes nothing, check mode agrees."""

from __future__ import annotations

from conftest import REPO, playbook, recap

SITE = REPO / "ansible" / "site.yml"
HOSTS = {"db", "app", "stream"}


def _assert_clean(result) -> dict[str, dict[str, int]]:
    counters = recap(result.stdout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert set(counters) >= HOSTS, result.stdout[-3000:]
    for host in HOSTS:
        assert counters[host]["failed"] == 0 and counters[host]["unreachable"] == 0
    return counters


def test_site_converges(lab_up):
    _assert_clean(playbook(SITE))


def test_second_run_changes_nothing(lab_up):
    counters = _assert_clean(playbook(SITE))
    changed = {host: counters[host]["changed"] for host in HOSTS}
    assert changed == dict.fromkeys(HOSTS, 0), changed


def test_check_mode_on_a_converged_lab_reports_no_change(lab_up):
    counters = _assert_clean(playbook("--check", "--diff", SITE))
    assert all(counters[host]["changed"] == 0 for host in HOSTS), counters
