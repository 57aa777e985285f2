"""Unit tests that start Ansible (ansible-playbook, ansible, ansible-inventory) carry the marker
``ansible``: they take seconds each, so `pytest -m "not ansible"` is the quick loop. The marker
is checked, not trusted: a test that starts Ansible without it fails, naming the command."""

from __future__ import annotations

import os
import subprocess
from typing import ClassVar

import pytest


class _Watched(subprocess.Popen):
    started: ClassVar[list[str]] = []

    def __init__(self, args, *rest, **kwargs):
        program = args if isinstance(args, str | bytes | os.PathLike) else args[0]
        name = os.path.basename(os.fsdecode(program).split()[0])
        if name.startswith("ansible"):
            _Watched.started.append(name)
        super().__init__(args, *rest, **kwargs)


@pytest.fixture(autouse=True)
def _ansible_marker_is_honest(request, monkeypatch):
    _Watched.started = []
    monkeypatch.setattr(subprocess, "Popen", _Watched)
    yield
    if _Watched.started and request.node.get_closest_marker("ansible") is None:
        pytest.fail(
            f"this test starts {sorted(set(_Watched.started))}: mark it @pytest.mark.ansible"
        )
