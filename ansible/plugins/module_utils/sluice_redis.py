"""A small Redis client for Sluice's modules (RESP2 over a socket, no dependencies), and the
cluster state parsing the modules share. Runs on the managed hosts with Debian's python3.

Passwords travel only inside the AUTH command on the socket: never in argv or a log."""

from __future__ import annotations

import contextlib
import socket
import time


class RedisError(Exception):
    """An error reply from Redis, or a connection problem; the message names the node."""


class Connection:
    def __init__(self, host: str, port: int, user: str, password: str, timeout: float = 5.0):
        self.endpoint = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise RedisError(f"{self.endpoint}: cannot connect ({exc})") from exc
        self._buffer = b""
        if password:
            self.call("AUTH", user, password)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            self._sock.sendall(b"".join(parts))
            reply = self._read()
        except OSError as exc:
            raise RedisError(f"{self.endpoint}: {args[0]} failed ({exc})") from exc
        if isinstance(reply, RedisError):
            command = str(args[0]) if args[0] != "AUTH" else "AUTH"
            raise RedisError(f"{self.endpoint}: {command}: {reply}")
        return reply

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _exact(self, size: int) -> bytes:
        while len(self._buffer) < size + 2:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("connection closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size + 2 :]
        return data

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exact(size).decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise OSError(f"unexpected reply {line[:40]!r}")


def info(conn: Connection, section: str) -> dict:
    """INFO <section> (or CLUSTER INFO when section == 'cluster-info') as a dict."""
    text = conn.call("CLUSTER", "INFO") if section == "cluster-info" else conn.call("INFO", section)
    found = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            found[key] = value.strip()
    return found


def cluster_nodes(conn: Connection) -> list[dict]:
    """CLUSTER NODES, parsed: id, endpoint (ip:port), flags, master id, slot count, link."""
    nodes = []
    for line in conn.call("CLUSTER", "NODES").splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = fields[1].split("@", 1)[0]
        flags = fields[2].split(",")
        slots = 0
        for spec in fields[8:]:
            if spec.startswith("["):
                continue  # a slot being migrated
            first, _, last = spec.partition("-")
            slots += int(last or first) - int(first) + 1
        nodes.append(
            {
                "id": fields[0],
                "endpoint": address,
                "flags": flags,
                "myself": "myself" in flags,
                "role": "master" if "master" in flags else "replica",
                "master_id": None if fields[3] == "-" else fields[3],
                "slots": slots,
                "failed": "fail" in flags or "fail?" in flags,
                "handshake": "handshake" in flags,
                "connected": fields[7] == "connected",
            }
        )
    return nodes


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll ``predicate`` until it returns a true value; raise RedisError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except RedisError as exc:
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise RedisError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
