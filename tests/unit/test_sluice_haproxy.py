"""sluice-haproxy (role sluice): drains an API instance until its sessions end, puts it back
until HAProxy's checks pass, and says when it timed out or the server is unknown."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = (
    Path(__file__).resolve().parents[2] / "ansible/roles/sluice/files/usr/local/sbin/sluice-haproxy"
)
_loader = importlib.machinery.SourceFileLoader("sluice_haproxy", str(SCRIPT))
_spec = importlib.util.spec_from_loader("sluice_haproxy", _loader)
tool = importlib.util.module_from_spec(_spec)
_loader.exec_module(tool)

HEADER = "# pxname,svname,qcur,qmax,scur,smax,status,\n"


def stat(rows: list[tuple[str, str, int, int, str]]) -> str:
    lines = [f"{px},{sv},{q},0,{s},0,{status}," for px, sv, q, s, status in rows]
    return HEADER + "\n".join(lines) + "\n"


class FakeSocket:
    """Answers `show stat` from a script of states; records every other command."""

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.sent: list[str] = []

    def __call__(self, line: str) -> str:
        if line == "show stat":
            return self.states.pop(0) if len(self.states) > 1 else self.states[0]
        self.sent.append(line)
        return "\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _args(action: str, timeout: float = 5.0) -> argparse.Namespace:
    return argparse.Namespace(
        action=action, server="api8101", backend="sluice_api", timeout=timeout
    )


def _run(action, states, capsys, timeout=5.0):
    sock, clock = FakeSocket(states), Clock()
    code = tool.run(_args(action, timeout), sock, clock=clock, sleep=clock.sleep)
    return code, sock.sent, json.loads(capsys.readouterr().out)


def test_drain_waits_for_in_flight_sessions(capsys):
    busy = stat([("sluice_api", "api8101", 0, 3, "DRAIN"), ("sluice_api", "api8102", 0, 5, "UP")])
    idle = stat([("sluice_api", "api8101", 0, 0, "DRAIN"), ("sluice_api", "api8102", 0, 5, "UP")])
    code, sent, out = _run("drain", [busy, busy, idle], capsys)
    assert code == 0 and sent == ["set server sluice_api/api8101 state drain"]
    assert out == {"server": "sluice_api/api8101", "status": "DRAIN", "sessions": 0,
                   "queued": 0, "done": True}  # fmt: skip


def test_drain_times_out_with_open_streams(capsys):
    streaming = stat([("sluice_api", "api8101", 0, 2, "DRAIN")])
    code, _, out = _run("drain", [streaming], capsys, timeout=2.0)
    assert code == 1 and out["done"] is False and out["sessions"] == 2


def test_ready_waits_for_checks_to_pass(capsys):
    down = stat([("sluice_api", "api8101", 0, 0, "DOWN 1/2")])
    up = stat([("sluice_api", "api8101", 0, 0, "UP")])
    code, sent, out = _run("ready", [down, down, up], capsys)
    assert code == 0 and sent == ["set server sluice_api/api8101 state ready"] and out["done"]


def test_unknown_server_is_named():
    sock = FakeSocket([stat([("sluice_api", "api8102", 0, 0, "UP")])])
    with pytest.raises(tool.HaproxyError, match="no server sluice_api/api8101"):
        tool.run(_args("status"), sock)


def test_refused_command_is_named():
    def ask(line: str) -> str:
        return "No such server.\n" if line.startswith("set") else stat([])

    with pytest.raises(tool.HaproxyError, match="No such server"):
        tool.run(_args("drain"), ask)


def test_missing_socket_is_named(tmp_path, capsys):
    code = tool.main(["status", "api8101", "--socket", str(tmp_path / "none.sock")])
    assert code == 2 and "is haproxy running" in capsys.readouterr().err


def test_worker_reports_the_pid_a_reload_changes(capsys):
    def ask(line: str) -> str:
        assert line == "show info"
        return "Name: HAProxy\nPid: 2016\nUptime_sec: 12\n"

    assert tool.run(_args("worker"), ask) == 0
    assert json.loads(capsys.readouterr().out) == {"pid": 2016, "uptime": "12"}


def test_server_actions_need_a_server():
    args = _args("drain")
    args.server = None
    with pytest.raises(tool.HaproxyError, match="needs a server name"):
        tool.run(args, FakeSocket([stat([])]))
