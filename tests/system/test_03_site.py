"""site.yml on the lab: converges, check mode on the converged lab reports no change, and a
second run changes nothing.

`make test` proves idempotence on the spread layout (molecule sluice's idempotence step, every
host running several roles) and leaves the seed layout's second run out (``layout_repeat``);
`make test-system` runs it."""

from __future__ import annotations

import pytest
from conftest import SITE, assert_clean, playbook


def test_site_converges(converged, layout):
    if converged is None:
        pytest.skip("--assume-converged: this session did not converge")
    assert_clean(converged, set(layout.groups["all"]))


@pytest.mark.layout_repeat
def test_second_run_changes_nothing(converged, layout):
    hosts = set(layout.groups["all"])
    counters = assert_clean(playbook(SITE), hosts)
    changed = {host: counters[host]["changed"] for host in hosts}
    assert changed == dict.fromkeys(hosts, 0), changed


def test_check_mode_on_a_converged_lab_reports_no_change(converged, layout):
    hosts = set(layout.groups["all"])
    counters = assert_clean(playbook("--check", "--diff", SITE), hosts)
    assert all(counters[host]["changed"] == 0 for host in hosts), counters
