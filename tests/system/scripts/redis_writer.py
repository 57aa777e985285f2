"""Runs on a lab machine: INCR one key of the Redis Cluster as the sluice user, as fast as a
single client can, for a while, following MOVED redirections and riding out a failover.

Usage: python3 redis_writer.py KEY SECONDS ENDPOINT... ; the password is the first line of
stdin. Prints one JSON line: acknowledged writes, failed attempts, the outage window."""

import json
import socket
import sys
import time


def command(sock, *args):
    payload = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in (str(x).encode() for x in args)
    )
    sock.sendall(payload)
    reader = sock.makefile("rb")
    line = reader.readline()
    if not line:
        raise OSError("connection closed")
    if line[:1] == b"-":
        raise RuntimeError(line[1:].strip().decode())
    return line[1:].strip().decode()


def connect(endpoint, password):
    host, port = endpoint.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=1)
    command(sock, "AUTH", "sluice", password)
    return sock


def main():
    key, seconds, endpoints = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    password = sys.stdin.readline().strip()
    deadline = time.monotonic() + seconds
    acked, failures, first_fail, last_fail, last_value = 0, 0, None, None, 0
    errors = {}
    target, sock = endpoints[0], None
    while time.monotonic() < deadline:
        try:
            if sock is None:
                sock = connect(target, password)
            last_value = int(command(sock, "INCR", key))
            acked += 1
        except RuntimeError as exc:
            message = str(exc)
            if message.startswith("MOVED"):
                target, sock = message.split()[2], None
                continue
            failures, now = failures + 1, time.monotonic()
            first_fail, last_fail = first_fail or now, now
            errors[message.split()[0]] = errors.get(message.split()[0], 0) + 1
            time.sleep(0.05)
        except OSError as exc:
            failures, now = failures + 1, time.monotonic()
            first_fail, last_fail = first_fail or now, now
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            sock, target = None, endpoints[(endpoints.index(target) + 1) % len(endpoints)]
            time.sleep(0.05)
    outage = (last_fail - first_fail) if first_fail else 0.0
    print(
        json.dumps(
            {
                "acked": acked,
                "failures": failures,
                "outage_seconds": round(outage, 2),
                "last_value": last_value,
                "errors": errors,
            }
        )
    )


main()
