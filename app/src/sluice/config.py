"""The service's settings, read once from ``SLUICE_*`` environment variables.

The ``sluice`` role renders these variables into an env file from the central settings and the
vault, and systemd hands them to every API and processor instance; nothing else configures the
service, so a setting cannot be half-configured somewhere else. :meth:`Settings.from_env` checks
every variable at start-up and reports all problems at once, each naming its variable,
its value and what would be accepted: a service that starts is a service whose settings are
usable, and a deploy with a typo fails on the first instance instead of on the first request.

Secrets (the Kafka, Redis and PostgreSQL passwords) are excluded from ``repr()``, so a
:class:`Settings` can be logged whole. The DSN properties contain the PostgreSQL passwords;
hand them to the driver, never to a log.

The variables (``*`` = required):

===================================== =========================================================
``SLUICE_KAFKA_BOOTSTRAP_SERVERS`` *  ``host:port[,host:port...]``
``SLUICE_KAFKA_TOPIC``                topic the API produces to (``events.raw``)
``SLUICE_KAFKA_SECURITY_PROTOCOL``    ``SASL_SSL`` (default), ``SSL``, ``SASL_PLAINTEXT``,
                                      ``PLAINTEXT``
``SLUICE_KAFKA_SASL_MECHANISM``       ``SCRAM-SHA-512`` (default), ``SCRAM-SHA-256``, ``PLAIN``
``SLUICE_KAFKA_SASL_USERNAME``        required with a ``SASL_*`` protocol
``SLUICE_KAFKA_SASL_PASSWORD``        required with a ``SASL_*`` protocol
``SLUICE_KAFKA_CA_FILE``              PEM file of the CA that signed the brokers' certificates
``SLUICE_PRODUCE_TIMEOUT_SECONDS``    how long a request waits for ``acks=all`` (5) before a 503
``SLUICE_REDIS_NODES`` *              Redis Cluster startup nodes, ``host:port[,host:port...]``
``SLUICE_REDIS_USERNAME``             ACL user (``sluice``)
``SLUICE_REDIS_PASSWORD`` *           its password
``SLUICE_POSTGRES_HOST`` *            host of the coordinator (or the plain PostgreSQL)
``SLUICE_POSTGRES_PORT``              5432
``SLUICE_POSTGRES_DB``                ``sluice``
``SLUICE_POSTGRES_SSLMODE``           libpq ``sslmode`` (``require``)
``SLUICE_POSTGRES_WRITER_USER``       ``sluice_writer`` (owns the tables; the processor writes)
``SLUICE_POSTGRES_WRITER_PASSWORD``   its password (the processor, ``migrate``, ``keys``)
``SLUICE_POSTGRES_READER_USER``       ``sluice_reader`` (the query API and key lookups)
``SLUICE_POSTGRES_READER_PASSWORD``   its password (the API, ``replay``); one of the two at least
``SLUICE_MAX_EVENT_BYTES``            262144 (256 KiB, one event as JSON)
``SLUICE_MAX_REQUEST_BYTES``          5242880 (5 MiB, one request body)
``SLUICE_MAX_BATCH_EVENTS``           1000 (events in one batch request)
``SLUICE_MAX_CLOCK_SKEW_SECONDS``     3600: how far in the future an event's ``time`` may lie
``SLUICE_RATE_LIMIT_REQUESTS``        10000 requests per tenant per window (DESIGN.md)
``SLUICE_RATE_LIMIT_WINDOW_SECONDS``  60
``SLUICE_API_KEY_CACHE_SECONDS``      10: how long a verified API key is trusted without a new
                                      lookup, so also how long a revocation may take to bite
``SLUICE_OIDC_ISSUER``                turns OIDC JWT bearer tokens on; the ``iss`` to require
``SLUICE_OIDC_AUDIENCE``              required with the issuer; the ``aud`` to require
``SLUICE_OIDC_JWKS_URL``              default: Keycloak's ``<issuer>/protocol/openid-connect/certs``
``SLUICE_OIDC_TENANT_CLAIM``          top-level claim naming the tenant (``tenant``)
``SLUICE_OIDC_ALGORITHMS``            ``RS256,ES256``; asymmetric algorithms only
``SLUICE_OIDC_ALLOWED_TENANTS``       comma-separated tenants tokens may act for (empty: any)
``SLUICE_OIDC_LEEWAY_SECONDS``        clock skew allowed on ``exp``/``nbf``/``iat`` (30)
``SLUICE_BIND_HOST``                  127.0.0.1 (HAProxy in front)
``SLUICE_BIND_PORT``                  8081
``SLUICE_METRICS_HOST``               0.0.0.0: address the ``--metrics-port`` server of ``serve``
                                      and ``process`` listens on (an IP address or host name)
===================================== =========================================================
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from psycopg.conninfo import make_conninfo

from sluice.cloudevents import Limits
from sluice.tenants import validate_tenant

PREFIX: Final = "SLUICE_"

#: Asymmetric JWS algorithms PyJWT verifies with a public key from a JWKS. ``none`` and the
#: HMAC family (``HS*``) are absent on purpose: with a JWKS, an HS256 token "signed" with the
#: published public key would otherwise verify (the classic algorithm-confusion attack).
SUPPORTED_JWT_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
KAFKA_SECURITY_PROTOCOLS: Final = ("SASL_SSL", "SSL", "SASL_PLAINTEXT", "PLAINTEXT")
KAFKA_SASL_MECHANISMS: Final = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
POSTGRES_SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")
_CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*")

_T = TypeVar("_T")


class ConfigError(ValueError):
    """The environment does not describe a usable service; the message lists every problem,
    one a line, each starting with the variable to fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"Sluice cannot start: {len(problems)} setting(s) to fix in its environment "
            f"(the sluice role writes them to the service's env file):\n{listing}"
        )


@dataclass(frozen=True)
class KafkaSettings:
    """How the API reaches Kafka and how long it waits for ``acks=all``."""

    bootstrap_servers: tuple[str, ...]
    topic: str = "events.raw"
    security_protocol: str = "SASL_SSL"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    produce_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class RedisSettings:
    """The Redis Cluster the rate limiter, the aggregates and the live stream use."""

    startup_nodes: tuple[tuple[str, int], ...]
    username: str = "sluice"
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class PostgresSettings:
    """One database, two roles: the writer owns and fills the tables, the reader serves the
    query API and key lookups, so a bug on the read path cannot change stored events."""

    host: str
    port: int = 5432
    database: str = "sluice"
    sslmode: str = "require"
    writer_user: str = "sluice_writer"
    writer_password: str = field(default="", repr=False)
    reader_user: str = "sluice_reader"
    reader_password: str = field(default="", repr=False)

    @property
    def writer_dsn(self) -> str:
        """libpq conninfo of the writer role (contains its password: never log it). Raises
        ConfigError naming the variable when this process was given no writer password (the
        API's env file holds only the reader's)."""
        if not self.writer_password:
            raise ConfigError(
                [
                    f"{PREFIX}POSTGRES_WRITER_PASSWORD is not set but is required "
                    "(the processor, migrate and keys write as the writer role)"
                ]
            )
        return self._dsn(self.writer_user, self.writer_password)

    @property
    def reader_dsn(self) -> str:
        """libpq conninfo of the reader role (contains its password: never log it); ConfigError
        naming the variable without a reader password."""
        if not self.reader_password:
            raise ConfigError(
                [
                    f"{PREFIX}POSTGRES_READER_PASSWORD is not set but is required "
                    "(the API and replay read as the reader role)"
                ]
            )
        return self._dsn(self.reader_user, self.reader_password)

    def _dsn(self, user: str, password: str) -> str:
        return make_conninfo(
            "",
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=user,
            password=password,
            sslmode=self.sslmode,
            application_name="sluice",
        )


@dataclass(frozen=True)
class OidcSettings:
    """Which JWT bearer tokens the API accepts: signed by a key of ``jwks_url`` with one of
    ``algorithms``, issued by ``issuer`` for ``audience``, naming the tenant in
    ``tenant_claim``."""

    issuer: str
    audience: str
    jwks_url: str
    tenant_claim: str = "tenant"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    allowed_tenants: frozenset[str] = frozenset()
    leeway_seconds: float = 30.0

    def __post_init__(self) -> None:
        unsafe = [name for name in self.algorithms if name not in SUPPORTED_JWT_ALGORITHMS]
        if unsafe or not self.algorithms:
            raise ValueError(
                f"OidcSettings.algorithms must be a non-empty choice of "
                f"{', '.join(sorted(SUPPORTED_JWT_ALGORITHMS))}; got {list(self.algorithms)}"
            )


@dataclass(frozen=True)
class Settings:
    """Everything ``sluice serve`` needs; ``oidc`` is None when only API keys are accepted."""

    kafka: KafkaSettings
    redis: RedisSettings
    postgres: PostgresSettings
    oidc: OidcSettings | None = None
    limits: Limits = field(default_factory=Limits)
    rate_limit_requests: int = 10_000
    rate_limit_window_seconds: int = 60
    api_key_cache_seconds: float = 10.0
    bind_host: str = "127.0.0.1"
    bind_port: int = 8081
    metrics_host: str = "0.0.0.0"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``environ`` (default: the process environment); ConfigError listing
        every variable that is missing or wrong."""
        reader = _Reader(os.environ if environ is None else environ)
        settings = reader.settings()
        if reader.problems:
            raise ConfigError(reader.problems)
        assert settings is not None  # every None-producing path recorded a problem
        return settings


class _Reader:
    """Reads variables and collects problems instead of stopping at the first one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def settings(self) -> Settings | None:
        kafka = self._kafka()
        redis = self._redis()
        postgres = self._postgres()
        oidc = self._oidc()
        limits = self._limits()
        rate_limit_requests = self.integer("RATE_LIMIT_REQUESTS", 10_000, low=1)
        rate_limit_window = self.integer("RATE_LIMIT_WINDOW_SECONDS", 60, low=1, high=86_400)
        key_cache = self.number("API_KEY_CACHE_SECONDS", 10.0, low=0.0, high=3600.0)
        bind_host = self.text("BIND_HOST", "127.0.0.1")
        bind_port = self.integer("BIND_PORT", 8081, low=1, high=65_535)
        metrics_host = self.listen_address("METRICS_HOST", "0.0.0.0")
        if self.problems or kafka is None or redis is None or postgres is None:
            return None
        return Settings(
            kafka=kafka,
            redis=redis,
            postgres=postgres,
            oidc=oidc,
            limits=limits,
            rate_limit_requests=rate_limit_requests,
            rate_limit_window_seconds=rate_limit_window,
            api_key_cache_seconds=key_cache,
            bind_host=bind_host,
            bind_port=bind_port,
            metrics_host=metrics_host,
        )

    def _kafka(self) -> KafkaSettings | None:
        servers = self.host_ports("KAFKA_BOOTSTRAP_SERVERS")
        topic = self.text("KAFKA_TOPIC", "events.raw")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
            self.problem("KAFKA_TOPIC", topic, "a Kafka topic name: letters, digits, '.', '_', '-'")
        protocol = self.choice("KAFKA_SECURITY_PROTOCOL", "SASL_SSL", KAFKA_SECURITY_PROTOCOLS)
        mechanism = self.choice("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", KAFKA_SASL_MECHANISMS)
        username = self.optional("KAFKA_SASL_USERNAME")
        password = self.optional("KAFKA_SASL_PASSWORD")
        if protocol.startswith("SASL_"):
            if username is None:
                self.missing("KAFKA_SASL_USERNAME", f"SLUICE_KAFKA_SECURITY_PROTOCOL is {protocol}")
            if password is None:
                self.missing("KAFKA_SASL_PASSWORD", f"SLUICE_KAFKA_SECURITY_PROTOCOL is {protocol}")
        ca_file = self.optional("KAFKA_CA_FILE")
        if ca_file is not None and not Path(ca_file).is_file():
            self.problem("KAFKA_CA_FILE", ca_file, "the path of a readable PEM file")
        timeout = self.number("PRODUCE_TIMEOUT_SECONDS", 5.0, low=0.1, high=300.0)
        if servers is None:
            return None
        return KafkaSettings(
            bootstrap_servers=tuple(f"{host}:{port}" for host, port in servers),
            topic=topic,
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ca_file=None if ca_file is None else Path(ca_file),
            produce_timeout_seconds=timeout,
        )

    def _redis(self) -> RedisSettings | None:
        nodes = self.host_ports("REDIS_NODES")
        username = self.text("REDIS_USERNAME", "sluice")
        password = self.required("REDIS_PASSWORD")
        if nodes is None or password is None:
            return None
        return RedisSettings(startup_nodes=nodes, username=username, password=password)

    def _postgres(self) -> PostgresSettings | None:
        host = self.required("POSTGRES_HOST")
        port = self.integer("POSTGRES_PORT", 5432, low=1, high=65_535)
        database = self.text("POSTGRES_DB", "sluice")
        sslmode = self.choice("POSTGRES_SSLMODE", "require", POSTGRES_SSLMODES)
        writer_user = self.text("POSTGRES_WRITER_USER", "sluice_writer")
        writer_password = self.optional("POSTGRES_WRITER_PASSWORD")
        reader_user = self.text("POSTGRES_READER_USER", "sluice_reader")
        reader_password = self.optional("POSTGRES_READER_PASSWORD")
        if writer_password is None and reader_password is None:
            why = "one role's password at least: the API reads as the reader, the processor writes"
            self.missing("POSTGRES_WRITER_PASSWORD", why)
            self.missing("POSTGRES_READER_PASSWORD", why)
        if host is None or (writer_password is None and reader_password is None):
            return None
        return PostgresSettings(
            host=host,
            port=port,
            database=database,
            sslmode=sslmode,
            writer_user=writer_user,
            writer_password=writer_password,
            reader_user=reader_user,
            reader_password=reader_password,
        )

    def _oidc(self) -> OidcSettings | None:
        issuer = self.optional("OIDC_ISSUER")
        if issuer is None:
            dependent = ("OIDC_AUDIENCE", "OIDC_JWKS_URL", "OIDC_ALLOWED_TENANTS")
            given = [PREFIX + name for name in dependent if self.optional(name) is not None]
            if given:
                self.missing("OIDC_ISSUER", f"{', '.join(given)} set; OIDC needs its issuer")
            return None
        if not issuer.startswith(("https://", "http://")):
            self.problem("OIDC_ISSUER", issuer, "the issuer URL, e.g. https://sso/realms/sluice")
        audience = self.optional("OIDC_AUDIENCE")
        if audience is None:
            self.missing("OIDC_AUDIENCE", "SLUICE_OIDC_ISSUER is set")
        jwks_url = self.text("OIDC_JWKS_URL", issuer.rstrip("/") + "/protocol/openid-connect/certs")
        if not jwks_url.startswith(("https://", "http://")):
            self.problem("OIDC_JWKS_URL", jwks_url, "an http(s) URL of the issuer's JWKS")
        claim = self.text("OIDC_TENANT_CLAIM", "tenant")
        if not _CLAIM_NAME.fullmatch(claim):
            self.problem("OIDC_TENANT_CLAIM", claim, "the name of a top-level claim")
        algorithms = self.listing("OIDC_ALGORITHMS", ("RS256", "ES256"))
        refused = [name for name in algorithms if name not in SUPPORTED_JWT_ALGORITHMS]
        if refused or not algorithms:
            self.problem(
                "OIDC_ALGORITHMS",
                ",".join(algorithms),
                f"asymmetric algorithms among {', '.join(sorted(SUPPORTED_JWT_ALGORITHMS))} "
                "('none' and HS* are refused: a JWKS holds public keys, which must never be "
                "accepted as HMAC secrets)",
            )
            algorithms = ("RS256", "ES256")
        tenants = self.listing("OIDC_ALLOWED_TENANTS", ())
        for tenant in tenants:
            try:
                validate_tenant(tenant)
            except ValueError as error:
                self.problem("OIDC_ALLOWED_TENANTS", tenant, str(error))
        leeway = self.number("OIDC_LEEWAY_SECONDS", 30.0, low=0.0, high=300.0)
        if audience is None:
            return None
        return OidcSettings(
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            tenant_claim=claim,
            algorithms=algorithms,
            allowed_tenants=frozenset(tenants),
            leeway_seconds=leeway,
        )

    def _limits(self) -> Limits:
        defaults = Limits()
        event = self.integer("MAX_EVENT_BYTES", defaults.max_event_bytes, low=1024)
        request = self.integer("MAX_REQUEST_BYTES", defaults.max_request_bytes, low=1024)
        batch = self.integer("MAX_BATCH_EVENTS", defaults.max_batch_events, low=1, high=100_000)
        skew = self.integer(
            "MAX_CLOCK_SKEW_SECONDS", defaults.max_clock_skew_seconds, low=1, high=7 * 86_400
        )
        if request < event:
            self.problem(
                "MAX_REQUEST_BYTES",
                str(request),
                f"at least SLUICE_MAX_EVENT_BYTES ({event}), or no single event could be sent",
            )
        return Limits(event, request, batch, skew)

    # Readers of one variable. Each returns a usable value even after recording a problem, so
    # the caller can go on and report the next variable too.

    def optional(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name, "").strip()
        return value or None

    def required(self, name: str) -> str | None:
        value = self.optional(name)
        if value is None:
            self.missing(name, "it has no default")
        return value

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            self.problem(name, value, f"one of {', '.join(allowed)}")
            return default
        return value

    def listing(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.optional(name)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def listen_address(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOST_NAME.fullmatch(value):
                self.problem(
                    name,
                    value,
                    "an address to listen on: 0.0.0.0 (every IPv4 interface), :: (every "
                    "interface), one of the host's IP addresses (no brackets) or a host name",
                )
                return default
        return value

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        return self._parsed(name, default, int, "a whole number", low, high)

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        return self._parsed(name, default, _finite_float, "a number", low, high)

    def host_ports(self, name: str) -> tuple[tuple[str, int], ...] | None:
        value = self.required(name)
        if value is None:
            return None
        found: list[tuple[str, int]] = []
        for item in (item.strip() for item in value.split(",")):
            match = _HOST_PORT.fullmatch(item)
            if match is None or not 1 <= int(match["port"]) <= 65_535:
                self.problem(
                    name,
                    value,
                    f"host:port entries, comma-separated (db1:9092,db2:9092); {item!r} is not one",
                )
                return None
            found.append((match["host"].strip("[]"), int(match["port"])))
        return tuple(found)

    def _parsed(
        self,
        name: str,
        default: _T,
        parse: Callable[[str], _T],
        kind: str,
        low: float,
        high: float | None,
    ) -> _T:
        raw = self.optional(name)
        if raw is None:
            return default
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        try:
            value = parse(raw)
        except ValueError:
            self.problem(name, raw, f"{kind} {bounds}")
            return default
        if not low <= value <= (math.inf if high is None else high):  # type: ignore[operator]
            self.problem(name, raw, f"{kind} {bounds}")
            return default
        return value

    def missing(self, name: str, why: str) -> None:
        self.problems.append(f"{PREFIX}{name} is not set but is required ({why})")

    def problem(self, name: str, value: str, expected: str) -> None:
        self.problems.append(f"{PREFIX}{name}={value!r} is invalid: expected {expected}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not finite")
    return value
