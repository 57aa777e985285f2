"""The Redis Functions library `sluice`, exercised with real FCALLs against a local redis-server.

A throwaway redis-server (the Debian bookworm 7.0 the nodes run) listens on 127.0.0.1 for this
module only; a small RESP client below talks to it, so no Redis client library is needed.
"""

from __future__ import annotations

import collections
import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sluice_infra.redis_functions import (
    LIBRARY_PATH,
    compile_check,
    library_code,
    library_name,
)

REDIS_SERVER = Path("/usr/bin/redis-server")
LUAC = Path("/usr/bin/luac5.1")
HOST_DEPS = "run `make host-deps` (Debian packages redis-server and lua5.1)"

# The API's default: 10,000 requests per minute per tenant (DESIGN.md).
LIMIT = 10_000
WINDOW_MS = 60_000
NOW_MS = 1_795_000_000_000

AGG_T1 = "sluice:{t1}:agg:202611262301"
AGG_T2 = "sluice:{t2}:agg:202611262301"
RL_T1 = ("sluice:{t1}:rl", "sluice:{t1}:rl:seq")
RL_T2 = ("sluice:{t2}:rl", "sluice:{t2}:rl:seq")

BROKEN_LIBRARY = """#!lua name=broken
local function f(keys, args)
  return redis.call('GET', keys[1]
end
redis.register_function('broken_get', f)
"""


# --- a minimal RESP2 client ----------------------------------------------------------------


class RedisError(Exception):
    """An error reply (`-ERR ...`)."""


Reply = bytes | int | list["Reply"] | RedisError | None


class Resp:
    """Just enough of the Redis protocol: arrays of bulk strings out, the five reply types in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    @staticmethod
    def encode(args: Sequence[str | bytes | int]) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def read_reply(self) -> Reply:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"connection closed or bad reply: {line!r}")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read_reply() for _ in range(size)]
        raise ConnectionError(f"unknown reply type: {line!r}")

    def pipeline(self, commands: Sequence[Sequence[str | bytes | int]]) -> list[Reply]:
        """Send all commands, then read one reply each; error replies are returned, not raised."""
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read_reply() for _ in commands]

    def __call__(self, *args: str | bytes | int) -> Reply:
        reply = self.pipeline([args])[0]
        if isinstance(reply, RedisError):
            raise reply
        return reply


# --- a throwaway redis-server ---------------------------------------------------------------


def free_port() -> int:
    """A free port with room for its cluster bus port (port + 10000 <= 65535)."""
    while True:
        port = random.randint(20000, 55000)
        with socket.socket() as s, socket.socket() as bus:
            try:
                s.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            return port


def start_redis(workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Resp]:
    if not REDIS_SERVER.exists():
        pytest.fail(f"{REDIS_SERVER} is missing: {HOST_DEPS}")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "redis.log"
    argv = [
        str(REDIS_SERVER),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(workdir),
        "--logfile", str(log),
        *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=workdir)
    deadline = time.monotonic() + 10
    while True:
        try:
            client = Resp(port)
            if client("PING") == b"PONG":
                return proc, client
        except RedisError as err:
            if str(err).startswith("NOAUTH"):  # up, with an ACL file that wants a login
                return proc, client
        except (ConnectionError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            text = log.read_text() if log.exists() else ""
            pytest.fail(f"redis-server on port {port} did not start:\n{text[-2000:]}")
        time.sleep(0.05)


def stop_redis(proc: subprocess.Popen[bytes], client: Resp) -> None:
    client.close()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resp]:
    proc, client = start_redis(tmp_path_factory.mktemp("redis"))
    assert client("FUNCTION", "LOAD", "REPLACE", library_code()) == b"sluice"
    yield client
    stop_redis(proc, client)


@pytest.fixture
def r(server: Resp) -> Resp:
    """The module's server, emptied of keys (the library stays loaded)."""
    server("FLUSHALL")
    return server


def aggregate(r: Resp, key: str, event_type: str, increment: object, ttl: object = 120) -> Reply:
    return r("FCALL", "sluice_aggregate", 1, key, event_type, str(increment), str(ttl))


def aggregate_set(r: Resp, key: str, ttl: object, *pairs: object) -> Reply:
    return r("FCALL", "sluice_aggregate_set", 1, key, str(ttl), *(str(p) for p in pairs))


def rate_limit_cmd(keys: tuple[str, str], now_ms: int | None = None) -> list[str | int]:
    cmd: list[str | int] = ["FCALL", "sluice_rate_limit", 2, *keys, LIMIT, WINDOW_MS]
    return cmd if now_ms is None else [*cmd, now_ms]


def as_dict(flat: Reply) -> dict[str, int]:
    assert isinstance(flat, list)
    pairs = zip(flat[::2], flat[1::2], strict=True)
    return {bytes(k).decode(): int(v) for k, v in pairs}  # type: ignore[arg-type]


# --- the library as Redis sees it -----------------------------------------------------------


def test_library_registers_four_functions_with_the_read_one_read_only(server: Resp):
    libraries = server("FUNCTION", "LIST", "LIBRARYNAME", "sluice")
    assert isinstance(libraries, list) and len(libraries) == 1
    library = dict(zip(libraries[0][::2], libraries[0][1::2], strict=True))  # type: ignore[index]
    functions = {}
    for entry in library[b"functions"]:
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
        functions[fields[b"name"].decode()] = fields[b"flags"]
    assert functions == {
        "sluice_aggregate": [],
        "sluice_aggregate_set": [],
        "sluice_rate_limit": [],
        "sluice_aggregates_read": [b"no-writes"],
    }


def test_redis_rejects_a_library_that_does_not_compile(server: Resp):
    with pytest.raises(RedisError, match="Error compiling function"):
        server("FUNCTION", "LOAD", BROKEN_LIBRARY)
    with pytest.raises(RedisError, match="Missing library metadata"):
        server("FUNCTION", "LOAD", BROKEN_LIBRARY.split("\n", 1)[1])
    assert server("FUNCTION", "LIST", "LIBRARYNAME", "broken") == []


def test_every_redis_call_names_a_declared_key():
    """Cluster mode needs every key in KEYS: the first argument of each data command is keys[i]."""
    code = library_code()
    calls = re.findall(r"redis\.call\('([A-Z]+)'(?:,\s*([^,)]+))?", code)
    assert len(calls) >= 10, calls
    for command, first_arg in calls:
        if command == "TIME":
            continue
        assert re.fullmatch(r"keys\[\d\]", first_arg), (command, first_arg)


# --- sluice_aggregate -----------------------------------------------------------------------


def test_aggregate_counts_exactly_per_type_and_total(r: Resp):
    rng = random.Random(20261126)
    expected: collections.Counter[str] = collections.Counter()
    commands, running = [], []
    for _ in range(1000):
        event_type = rng.choice(["page.view", "cart.add", "order.paid"])
        increment = rng.choice([1, 1, 1, 2, 5, 17])
        expected[event_type] += increment
        running.append(expected[event_type])
        commands.append(["FCALL", "sluice_aggregate", 1, AGG_T1, event_type, increment, 120])
    assert r.pipeline(commands) == running  # each call returns its type's new count
    assert as_dict(r("HGETALL", AGG_T1)) == {**expected, "_total": sum(expected.values())}


def test_aggregate_bucket_expires_within_ttl_and_is_never_extended(r: Resp):
    aggregate(r, AGG_T1, "page.view", 1, ttl=120)
    first = r("TTL", AGG_T1)
    assert isinstance(first, int) and 0 < first <= 120
    aggregate(r, AGG_T1, "page.view", 1, ttl=3600)  # a longer ttl does not extend the bucket
    assert 0 < r("TTL", AGG_T1) <= 120  # type: ignore[operator]
    aggregate(r, AGG_T1, "page.view", 1, ttl=30)  # a shorter one shortens it
    assert 0 < r("TTL", AGG_T1) <= 30  # type: ignore[operator]
    assert as_dict(r("HGETALL", AGG_T1)) == {"page.view": 3, "_total": 3}


def test_two_tenants_do_not_interfere(r: Resp):
    for _ in range(5):
        aggregate(r, AGG_T1, "page.view", 2)
    aggregate(r, AGG_T2, "page.view", 1)
    assert as_dict(r("HGETALL", AGG_T1)) == {"page.view": 10, "_total": 10}
    assert as_dict(r("HGETALL", AGG_T2)) == {"page.view": 1, "_total": 1}

    replies = r.pipeline([rate_limit_cmd(RL_T1, NOW_MS)] * 3 + [rate_limit_cmd(RL_T2, NOW_MS)])
    assert [reply[1] for reply in replies] == [  # type: ignore[index]
        LIMIT - 1,
        LIMIT - 2,
        LIMIT - 3,
        LIMIT - 1,
    ]
    assert r("ZCARD", RL_T1[0]) == 3
    assert r("ZCARD", RL_T2[0]) == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["page.view", "0", "60"], "increment"),
        (["page.view", "-3", "60"], "increment"),
        (["page.view", "1.5", "60"], "increment"),
        (["page.view", "many", "60"], "increment"),
        (["page.view", "9" * 16, "60"], "increment"),
        (["page.view"], "increment"),
        (["page.view", "1", "0"], "ttl_seconds"),
        (["page.view", "1", "soon"], "ttl_seconds"),
        (["page.view", "1"], "ttl_seconds"),
        (["", "1", "60"], "event_type"),
        (["_total", "1", "60"], "event_type"),
    ],
)
def test_aggregate_rejects_bad_arguments_by_name_and_writes_nothing(r: Resp, args, named):
    with pytest.raises(RedisError, match=rf"^ERR sluice_aggregate: {named} must be"):
        r("FCALL", "sluice_aggregate", 1, AGG_T1, *args)
    assert r("EXISTS", AGG_T1) == 0


def test_functions_reject_a_wrong_number_of_keys(r: Resp):
    with pytest.raises(RedisError, match="sluice_aggregate: expected 1 key"):
        r("FCALL", "sluice_aggregate", 2, AGG_T1, AGG_T1 + ":x", "page.view", 1, 60)
    with pytest.raises(RedisError, match="sluice_aggregate_set: expected 1 key"):
        r("FCALL", "sluice_aggregate_set", 0, 60, "page.view", 1)
    with pytest.raises(RedisError, match="sluice_rate_limit: expected 2 key"):
        r("FCALL", "sluice_rate_limit", 1, RL_T1[0], LIMIT, WINDOW_MS)


# --- sluice_aggregate_set -------------------------------------------------------------------


def test_aggregate_set_replaces_the_bucket_and_computes_the_total(r: Resp):
    aggregate(r, AGG_T1, "page.view", 7)
    aggregate(r, AGG_T1, "gone.type", 2)

    assert aggregate_set(r, AGG_T1, 120, "page.view", 9, "cart.add", 3) == [12, 1]

    # the counts given, nothing left of the old hash, `_total` the sum
    assert as_dict(r("HGETALL", AGG_T1)) == {"page.view": 9, "cart.add": 3, "_total": 12}


def test_aggregate_set_is_idempotent_and_says_when_nothing_changed(r: Resp):
    assert aggregate_set(r, AGG_T1, 120, "page.view", 9, "cart.add", 3) == [12, 1]
    assert aggregate_set(r, AGG_T1, 120, "cart.add", 3, "page.view", 9) == [12, 0]
    assert as_dict(r("HGETALL", AGG_T1)) == {"page.view": 9, "cart.add": 3, "_total": 12}
    # the processor's own counting yields the same bucket: nothing to correct
    r("DEL", AGG_T1)
    for _ in range(9):
        aggregate(r, AGG_T1, "page.view", 1)
    aggregate(r, AGG_T1, "cart.add", 3)
    assert aggregate_set(r, AGG_T1, 120, "page.view", 9, "cart.add", 3) == [12, 0]


def test_aggregate_set_restores_a_lost_count_and_counting_goes_on(r: Resp):
    aggregate(r, AGG_T1, "page.view", 5)  # 2 more were stored but never counted
    assert aggregate_set(r, AGG_T1, 120, "page.view", 7) == [7, 1]
    assert aggregate(r, AGG_T1, "page.view", 1) == 8
    assert as_dict(r("HGETALL", AGG_T1)) == {"page.view": 8, "_total": 8}


def test_aggregate_set_leaves_out_zero_counts_and_removes_an_empty_bucket(r: Resp):
    assert aggregate_set(r, AGG_T1, 120, "page.view", 0, "cart.add", 2) == [2, 1]
    assert as_dict(r("HGETALL", AGG_T1)) == {"cart.add": 2, "_total": 2}
    assert aggregate_set(r, AGG_T1, 120, "cart.add", 0) == [0, 1]
    assert r("EXISTS", AGG_T1) == 0
    assert aggregate_set(r, AGG_T1, 120) == [0, 0]  # no pairs: no bucket, as before
    assert r("EXISTS", AGG_T1) == 0


def test_aggregate_set_sets_the_ttl_given_which_later_counting_never_extends(r: Resp):
    aggregate(r, AGG_T1, "page.view", 1, ttl=3600)
    aggregate_set(r, AGG_T1, 90, "page.view", 4)
    first = r("TTL", AGG_T1)
    assert isinstance(first, int) and 80 < first <= 90  # the remaining lifetime, not the old TTL
    aggregate(r, AGG_T1, "page.view", 1, ttl=3600)
    assert 0 < r("TTL", AGG_T1) <= 90  # type: ignore[operator]
    aggregate_set(r, AGG_T1, 3000, "page.view", 4)
    assert 2990 < r("TTL", AGG_T1) <= 3000  # type: ignore[operator]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], "ttl_seconds must be"),
        (["0", "page.view", "1"], "ttl_seconds must be"),
        (["soon", "page.view", "1"], "ttl_seconds must be"),
        (["60", "page.view"], "expected ttl_seconds then event_type, count pairs, got 1"),
        (["60", "page.view", "1", "cart.add"], "expected ttl_seconds then event_type, count"),
        (["60", "", "1"], "event_type must be"),
        (["60", "page.view", "1", "_total", "1"], "event_type must be"),
        (["60", "page.view", "1", "page.view", "2"], "event_type 'page.view' is given twice"),
        (["60", "page.view", "-1"], "count must be"),
        (["60", "page.view", "1.5"], "count must be"),
        (["60", "page.view", "many"], "count must be"),
        (["60", "page.view", "9" * 16], "count must be"),
        (["60", "cart.add", "1", "page.view", "x"], "count must be"),
    ],
)
def test_aggregate_set_rejects_bad_arguments_by_name_and_writes_nothing(r: Resp, args, named):
    aggregate(r, AGG_T1, "page.view", 5, ttl=120)
    with pytest.raises(RedisError, match=rf"^ERR sluice_aggregate_set: {named}"):
        r("FCALL", "sluice_aggregate_set", 1, AGG_T1, *args)
    assert as_dict(r("HGETALL", AGG_T1)) == {"page.view": 5, "_total": 5}
    assert 0 < r("TTL", AGG_T1) <= 120  # type: ignore[operator]


# --- sluice_rate_limit ----------------------------------------------------------------------


def test_rate_limit_allows_exactly_the_limit_then_denies_with_retry_after(r: Resp):
    replies = r.pipeline([rate_limit_cmd(RL_T1, NOW_MS)] * LIMIT)
    assert replies == [[1, LIMIT - n - 1, 0] for n in range(LIMIT)]
    assert r("ZCARD", RL_T1[0]) == LIMIT  # every allowed request is a distinct entry

    allowed, remaining, retry_after = r(*rate_limit_cmd(RL_T1, NOW_MS))  # type: ignore[misc]
    assert (allowed, remaining) == (0, 0)
    assert 0 < retry_after <= WINDOW_MS
    assert retry_after == WINDOW_MS  # all entries were made at NOW_MS
    assert r("ZCARD", RL_T1[0]) == LIMIT  # a denied request is not recorded

    # Half a window later the same entries are still inside it: half a window to wait.
    assert r(*rate_limit_cmd(RL_T1, NOW_MS + WINDOW_MS // 2)) == [0, 0, WINDOW_MS // 2]
    # One ms before they leave the window, still denied, 1 ms to wait.
    assert r(*rate_limit_cmd(RL_T1, NOW_MS + WINDOW_MS - 1)) == [0, 0, 1]
    # Once the window has passed, the old entries are gone and requests pass again.
    assert r(*rate_limit_cmd(RL_T1, NOW_MS + WINDOW_MS)) == [1, LIMIT - 1, 0]
    assert r("ZCARD", RL_T1[0]) == 1


def test_rate_limit_window_slides(r: Resp):
    cmd = ["FCALL", "sluice_rate_limit", 2, *RL_T1, 3, 1000]
    assert r(*cmd, 0) == [1, 2, 0]
    assert r(*cmd, 400) == [1, 1, 0]
    assert r(*cmd, 800) == [1, 0, 0]
    assert r(*cmd, 900) == [0, 0, 100]  # the entry at 0 leaves the window at 1000
    assert r(*cmd, 1000) == [1, 0, 0]
    assert r(*cmd, 1100) == [0, 0, 300]  # now the oldest is the entry at 400


def test_rate_limit_keys_expire_with_the_window(r: Resp):
    r(*rate_limit_cmd(RL_T1, NOW_MS))
    for key in RL_T1:
        pttl = r("PTTL", key)
        assert isinstance(pttl, int) and 0 < pttl <= WINDOW_MS, (key, pttl)


def test_rate_limit_uses_server_time_without_now_ms(r: Resp):
    seconds, micros = r("TIME")  # type: ignore[misc]
    before_ms = int(seconds) * 1000 + int(micros) // 1000
    assert r(*rate_limit_cmd(RL_T1)) == [1, LIMIT - 1, 0]
    _member, score = r("ZRANGE", RL_T1[0], 0, 0, "WITHSCORES")  # type: ignore[misc]
    assert before_ms <= int(score) <= before_ms + 5000


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["0", "60000"], "limit"),
        (["lots", "60000"], "limit"),
        ([], "limit"),
        (["10", "0"], "window_ms"),
        (["10", "1m"], "window_ms"),
        (["10", "60000", "-5"], "now_ms"),
        (["10", "60000", "now"], "now_ms"),
    ],
)
def test_rate_limit_rejects_bad_arguments_by_name(r: Resp, args, named):
    with pytest.raises(RedisError, match=rf"^ERR sluice_rate_limit: {named} must be"):
        r("FCALL", "sluice_rate_limit", 2, *RL_T1, *args)
    assert r("EXISTS", *RL_T1) == 0


# --- read-only access -----------------------------------------------------------------------


def test_aggregates_read_works_with_fcall_ro(r: Resp):
    aggregate(r, AGG_T1, "page.view", 4)
    aggregate(r, AGG_T1, "cart.add", 1)
    flat = r("FCALL_RO", "sluice_aggregates_read", 1, AGG_T1)
    assert as_dict(flat) == {"page.view": 4, "cart.add": 1, "_total": 5}
    assert r("FCALL_RO", "sluice_aggregates_read", 1, AGG_T2) == []


@pytest.mark.parametrize(
    "command",
    [
        ["sluice_aggregate", 1, AGG_T1, "page.view", 1, 60],
        ["sluice_aggregate_set", 1, AGG_T1, 60, "page.view", 1],
        ["sluice_rate_limit", 2, *RL_T1, LIMIT, WINDOW_MS, NOW_MS],
    ],
)
def test_writing_functions_are_refused_by_fcall_ro(r: Resp, command):
    with pytest.raises(RedisError, match="write flag"):
        r("FCALL_RO", *command)
    assert r("DBSIZE") == 0


# --- cluster mode ---------------------------------------------------------------------------


def test_library_runs_on_a_cluster_node_and_keys_share_a_slot(tmp_path: Path):
    proc, node = start_redis(tmp_path, "--cluster-enabled", "yes")
    try:
        node("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in node("CLUSTER", "INFO"):  # type: ignore[operator]
            assert time.monotonic() < deadline, "single-node cluster did not reach state ok"
            time.sleep(0.05)
        assert node("FUNCTION", "LOAD", library_code()) == b"sluice"
        assert aggregate(node, AGG_T1, "page.view", 2) == 2
        assert aggregate_set(node, AGG_T1, 60, "page.view", 3) == [3, 1]
        assert node(*rate_limit_cmd(RL_T1, NOW_MS)) == [1, LIMIT - 1, 0]
        with pytest.raises(RedisError, match="CROSSSLOT"):
            node(*rate_limit_cmd((RL_T1[0], RL_T2[1]), NOW_MS))
    finally:
        stop_redis(proc, node)


# --- sluice_infra.redis_functions -----------------------------------------------------------


def test_library_path_and_name():
    assert LIBRARY_PATH.is_file()
    assert library_name(library_code()) == "sluice"
    assert library_name("#!lua name=other_lib\nreturn 1\n") == "other_lib"
    assert library_name("#!lua engine=lua name=x1\n") == "x1"


@pytest.mark.parametrize(
    "code",
    ["local x = 1\n", "#!lua\nreturn 1\n", "#!lua name=\n", "#!python name=sluice\n", ""],
)
def test_library_name_requires_the_shebang(code: str):
    with pytest.raises(ValueError, match=r"first line must be '#!lua name=<name>'"):
        library_name(code)


@pytest.fixture
def luac() -> str:
    if not LUAC.exists():
        pytest.fail(f"{LUAC} is missing: {HOST_DEPS}")
    return str(LUAC)


def test_the_shipped_library_compiles_with_luac(luac: str):
    result = subprocess.run([luac, "-p", str(LIBRARY_PATH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    compile_check(library_code(), luac)


def test_compile_check_names_the_library_and_the_line(luac: str, tmp_path: Path):
    where = tmp_path / "broken.lua"
    with pytest.raises(ValueError) as excinfo:
        compile_check(BROKEN_LIBRARY, luac, path=where)
    message = str(excinfo.value)
    assert message.startswith(f"Redis Functions library {where} does not compile: ")
    assert f"{where}:4:" in message  # luac's line number, with the library's path
    assert "')' expected" in message


def test_compile_check_says_how_to_get_luac(tmp_path: Path):
    missing = str(tmp_path / "no-such-luac")
    with pytest.raises(FileNotFoundError, match="make host-deps"):
        compile_check("return 1\n", missing)


def test_the_application_user_may_run_every_command_the_library_calls():
    """Redis checks a Function's commands against its caller's ACL: the sluice user's command
    list in the role must cover every redis.call in the library."""
    import re

    import yaml

    defaults = yaml.safe_load((LIBRARY_PATH.parents[1] / "defaults" / "main.yml").read_text())
    allowed = {c.lstrip("+").lower() for c in defaults["redis_cluster_sluice_commands"]}
    called = {c.lower() for c in re.findall(r"redis\.call\(\s*'([A-Za-z]+)'", library_code())}
    assert called and called <= allowed, f"missing from the ACL: {sorted(called - allowed)}"


# --- persistence under the role's ACL file --------------------------------------------------


def render_acl_file(passwords: dict[str, str]) -> str:
    """The role's users.acl as Ansible renders it (its two filters, the role's defaults)."""
    import hashlib

    import jinja2
    import yaml

    role = LIBRARY_PATH.parents[1]
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["hash"] = lambda text, kind: hashlib.new(kind, text.encode()).hexdigest()
    env.filters["regex_replace"] = lambda text, pattern, replacement: re.sub(
        pattern, replacement, text
    )
    template = env.from_string((role / "templates/etc/redis/users.acl.j2").read_text())
    return template.render(
        **defaults, **{f"vault_redis_{user}_password": pw for user, pw in passwords.items()}
    )


def test_a_killed_master_comes_back_with_every_count_from_its_aof(tmp_path: Path):
    """kill -9, then a restart: Redis replays its AOF as the default user, re-checking the
    commands of each MULTI/EXEC (an FCALL's effects) against that user's ACL. The role keeps the
    default user off (no one logs in as it) but lets it write the application's keys, or the
    replay refuses every transaction (NOPERM) and the master comes back empty."""
    passwords = {u: f"pw-{u}" for u in ("admin", "replication", "monitoring", "sluice")}
    (tmp_path / "users.acl").write_text(render_acl_file(passwords))
    persistence = (
        "--appendonly", "yes", "--appendfsync", "always", "--aclfile", str(tmp_path / "users.acl"),
    )  # fmt: skip

    proc, client = start_redis(tmp_path, *persistence)
    with pytest.raises(RedisError, match="NOAUTH"):  # the default user is off
        client("PING")
    assert client("AUTH", "admin", passwords["admin"]) == b"OK"
    assert client("FUNCTION", "LOAD", library_code()) == b"sluice"
    assert client("AUTH", "sluice", passwords["sluice"]) == b"OK"
    for increment in (3, 4):
        aggregate(client, AGG_T1, "order.placed", increment)
    client(*rate_limit_cmd(RL_T1))
    before = as_dict(client("HGETALL", AGG_T1))
    assert before["order.placed"] == 7, before
    client.close()
    proc.kill()  # SIGKILL: no shutdown, no final rewrite
    proc.wait()

    proc, client = start_redis(tmp_path, *persistence)
    try:
        assert client("AUTH", "admin", passwords["admin"]) == b"OK"
        log = (tmp_path / "redis.log").read_text()
        assert "NOPERM" not in log, log[-2000:]
        assert as_dict(client("HGETALL", AGG_T1)) == before
        assert client("EXISTS", RL_T1[0]) == 1
    finally:
        stop_redis(proc, client)
