"""The ``sluice`` command line."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from sluice import __version__
from sluice.cli import main


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0

    assert capsys.readouterr().out == f"{__version__}\n"


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    assert "version" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["keys"]])
def test_a_missing_or_unknown_command_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    assert "usage: sluice" in capsys.readouterr().err


# --- --metrics-port --------------------------------------------------------------------------

#: Just enough environment for the settings to load; nothing is reached before the metrics port.
ENVIRONMENT = {
    "SLUICE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "SLUICE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    "SLUICE_REDIS_NODES": "127.0.0.1:9",
    "SLUICE_REDIS_PASSWORD": "unused",
    "SLUICE_POSTGRES_HOST": "127.0.0.1",
    "SLUICE_POSTGRES_WRITER_PASSWORD": "unused",
    "SLUICE_POSTGRES_READER_PASSWORD": "unused",
    "SLUICE_METRICS_HOST": "127.0.0.1",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _must_not_start(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the command went on past a metrics port it could not bind")


@pytest.mark.parametrize("command", ["serve", "process"])
@pytest.mark.usefixtures("environment")
def test_a_metrics_port_in_use_fails_the_start_naming_the_port(
    command: str,
    busy_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sluice.service

    monkeypatch.setattr(sluice.service, "build_api", _must_not_start)
    monkeypatch.setattr(sluice.service, "SyncEventWriter", _must_not_start)

    assert main([command, "--metrics-port", str(busy_port)]) == 2

    error = capsys.readouterr().err
    assert error.startswith(f"sluice {command}: cannot serve metrics on 127.0.0.1:{busy_port}")
    assert "--metrics-port" in error


@pytest.mark.parametrize("command", ["serve", "process"])
@pytest.mark.parametrize("port", ["0", "65536", "http", "-1"])
def test_the_metrics_port_must_be_a_port_number(
    command: str, port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, f"--metrics-port={port}"])

    assert exited.value.code == 2
    assert "is not a TCP port number (1 to 65535)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "process"])
def test_the_metrics_port_option_is_documented(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])

    assert "--metrics-port PORT" in capsys.readouterr().out


@pytest.mark.usefixtures("environment")
def test_the_metrics_port_offset_follows_the_instance_port(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sluice.service

    monkeypatch.setattr(sluice.service, "build_api", _must_not_start)
    # one unit template: `serve --port %i --metrics-port-offset N` for every instance
    assert main(["serve", "--port", str(busy_port - 7), "--metrics-port-offset", "7"]) == 2
    assert f"cannot serve metrics on 127.0.0.1:{busy_port}" in capsys.readouterr().err

    assert main(["serve", "--port", "65000", "--metrics-port-offset", "1000"]) == 2
    assert "puts the metrics on 66000" in capsys.readouterr().err
    assert main(["serve", "--metrics-port", "9100", "--metrics-port-offset", "1"]) == 2
    assert "not both" in capsys.readouterr().err
