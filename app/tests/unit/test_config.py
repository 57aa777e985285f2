"""Settings from the environment: defaults from DESIGN.md, every mistake named by its variable,
secrets kept out of repr()."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from sluice.config import ConfigError, OidcSettings, Settings

SECRETS = {
    "SLUICE_KAFKA_SASL_PASSWORD": "kafka-secret-0001",
    "SLUICE_REDIS_PASSWORD": "redis-secret-0002",
    "SLUICE_POSTGRES_WRITER_PASSWORD": "writer-secret-0003",
    "SLUICE_POSTGRES_READER_PASSWORD": "reader 'secret' 0004",
}


def environment(**changes: str | None) -> dict[str, str]:
    """A complete environment as the sluice role writes it, with ``changes`` applied (None
    removes a variable)."""
    env = {
        "SLUICE_KAFKA_BOOTSTRAP_SERVERS": "stream:9092,stream:9093,stream:9094",
        "SLUICE_KAFKA_SASL_USERNAME": "sluice-producer",
        "SLUICE_REDIS_NODES": "stream:7000, stream:7001",
        "SLUICE_POSTGRES_HOST": "db",
        **SECRETS,
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def problems(**changes: str | None) -> str:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environment(**changes))
    return str(raised.value)


def test_a_minimal_environment_gets_the_designed_defaults() -> None:
    settings = Settings.from_env(environment())
    assert settings.kafka.bootstrap_servers == ("stream:9092", "stream:9093", "stream:9094")
    assert settings.kafka.topic == "events.raw"
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.redis.startup_nodes == (("stream", 7000), ("stream", 7001))
    assert settings.redis.username == "sluice"
    assert settings.rate_limit_requests == 10_000
    assert settings.rate_limit_window_seconds == 60
    assert settings.limits.max_event_bytes == 256 * 1024
    assert settings.limits.max_request_bytes == 5 * 1024 * 1024
    assert settings.oidc is None
    assert (settings.bind_host, settings.bind_port) == ("127.0.0.1", 8081)
    assert settings.metrics_host == "0.0.0.0"


def test_secrets_never_appear_in_repr() -> None:
    settings = Settings.from_env(
        environment(SLUICE_OIDC_ISSUER="https://sso/realms/s", SLUICE_OIDC_AUDIENCE="sluice")
    )
    shown = repr(settings) + str(settings)
    for secret in SECRETS.values():
        assert secret not in shown
    assert "sluice-producer" in shown  # the repr is still useful


def test_dsns_carry_the_roles_and_quote_their_passwords() -> None:
    postgres = Settings.from_env(environment(SLUICE_POSTGRES_PORT="5433")).postgres
    writer = conninfo_to_dict(postgres.writer_dsn)
    reader = conninfo_to_dict(postgres.reader_dsn)
    assert writer["user"] == "sluice_writer"
    assert writer["password"] == SECRETS["SLUICE_POSTGRES_WRITER_PASSWORD"]
    assert reader["user"] == "sluice_reader"
    assert reader["password"] == "reader 'secret' 0004"
    assert (reader["host"], reader["port"], reader["dbname"]) == ("db", "5433", "sluice")
    assert reader["sslmode"] == "require"


def test_every_missing_requirement_is_reported_at_once() -> None:
    message = problems(
        SLUICE_KAFKA_BOOTSTRAP_SERVERS=None,
        SLUICE_REDIS_NODES=None,
        SLUICE_REDIS_PASSWORD=None,
        SLUICE_POSTGRES_HOST=None,
        SLUICE_POSTGRES_WRITER_PASSWORD=None,
        SLUICE_POSTGRES_READER_PASSWORD=None,
    )
    for name in (
        "SLUICE_KAFKA_BOOTSTRAP_SERVERS",
        "SLUICE_REDIS_NODES",
        "SLUICE_REDIS_PASSWORD",
        "SLUICE_POSTGRES_HOST",
        "SLUICE_POSTGRES_WRITER_PASSWORD",
        "SLUICE_POSTGRES_READER_PASSWORD",
    ):
        assert f"{name} is not set" in message
    assert "6 setting(s)" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SLUICE_KAFKA_BOOTSTRAP_SERVERS", "stream", "host:port"),
        ("SLUICE_KAFKA_BOOTSTRAP_SERVERS", "stream:99999", "host:port"),
        ("SLUICE_REDIS_NODES", "stream:7000,,", "host:port"),
        ("SLUICE_KAFKA_TOPIC", "events raw", "topic name"),
        ("SLUICE_KAFKA_SECURITY_PROTOCOL", "TLS", "SASL_SSL"),
        ("SLUICE_KAFKA_SASL_MECHANISM", "GSSAPI", "SCRAM-SHA-512"),
        ("SLUICE_PRODUCE_TIMEOUT_SECONDS", "0", "from 0.1 to 300"),
        ("SLUICE_PRODUCE_TIMEOUT_SECONDS", "nan", "a number"),
        ("SLUICE_POSTGRES_PORT", "five", "whole number"),
        ("SLUICE_POSTGRES_SSLMODE", "always", "verify-full"),
        ("SLUICE_MAX_EVENT_BYTES", "10", ">= 1024"),
        ("SLUICE_MAX_BATCH_EVENTS", "0", "from 1 to 100000"),
        ("SLUICE_RATE_LIMIT_REQUESTS", "-5", ">= 1"),
        ("SLUICE_RATE_LIMIT_WINDOW_SECONDS", "1.5", "whole number"),
        ("SLUICE_API_KEY_CACHE_SECONDS", "-1", "from 0.0 to 3600"),
        ("SLUICE_BIND_PORT", "0", "from 1 to 65535"),
        ("SLUICE_METRICS_HOST", "10.77.0.12:9100", "an address to listen on"),
        ("SLUICE_METRICS_HOST", "[::]", "no brackets"),
        ("SLUICE_METRICS_HOST", "http://monitor", "an address to listen on"),
        ("SLUICE_METRICS_HOST", "-stream-", "a host name"),
        ("SLUICE_KAFKA_CA_FILE", "/nonexistent/ca.pem", "readable PEM file"),
    ],
)
def test_an_invalid_value_is_named_with_what_would_be_accepted(
    name: str, value: str, expected: str
) -> None:
    message = problems(**{name: value})
    line = next(line for line in message.splitlines() if name in line)
    assert repr(value) in line
    assert expected in line


def test_sasl_protocols_need_credentials_and_plaintext_does_not() -> None:
    message = problems(SLUICE_KAFKA_SASL_USERNAME=None, SLUICE_KAFKA_SASL_PASSWORD=None)
    assert "SLUICE_KAFKA_SASL_USERNAME is not set" in message
    assert "SLUICE_KAFKA_SASL_PASSWORD is not set" in message
    plain = Settings.from_env(
        environment(
            SLUICE_KAFKA_SECURITY_PROTOCOL="PLAINTEXT",
            SLUICE_KAFKA_SASL_USERNAME=None,
            SLUICE_KAFKA_SASL_PASSWORD=None,
        )
    )
    assert plain.kafka.sasl_username is None


def test_a_ca_file_that_exists_is_taken(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings.from_env(environment(SLUICE_KAFKA_CA_FILE=str(ca))).kafka.ca_file == ca


def test_the_request_limit_cannot_be_below_the_event_limit() -> None:
    message = problems(SLUICE_MAX_EVENT_BYTES="8192", SLUICE_MAX_REQUEST_BYTES="4096")
    assert "SLUICE_MAX_REQUEST_BYTES='4096' is invalid" in message
    assert "SLUICE_MAX_EVENT_BYTES (8192)" in message


def test_oidc_settings_with_keycloak_defaults() -> None:
    oidc = Settings.from_env(
        environment(
            SLUICE_OIDC_ISSUER="https://sso.example.com/realms/sluice/",
            SLUICE_OIDC_AUDIENCE="sluice-api",
            SLUICE_OIDC_ALLOWED_TENANTS="acme, globex",
        )
    ).oidc
    assert oidc is not None
    assert oidc.jwks_url == "https://sso.example.com/realms/sluice/protocol/openid-connect/certs"
    assert oidc.tenant_claim == "tenant"
    assert oidc.algorithms == ("RS256", "ES256")
    assert oidc.allowed_tenants == frozenset({"acme", "globex"})


@pytest.mark.parametrize("algorithms", ["none", "HS256", "RS256,HS512", ","])
def test_symmetric_and_none_algorithms_are_refused(algorithms: str) -> None:
    message = problems(
        SLUICE_OIDC_ISSUER="https://sso/realms/s",
        SLUICE_OIDC_AUDIENCE="sluice",
        SLUICE_OIDC_ALGORITHMS=algorithms,
    )
    assert "SLUICE_OIDC_ALGORITHMS=" in message
    assert "'none' and HS* are refused" in message


def test_symmetric_algorithms_are_refused_in_code_too() -> None:
    with pytest.raises(ValueError, match="algorithms"):
        OidcSettings(
            issuer="https://i", audience="a", jwks_url="https://i/k", algorithms=("HS256",)
        )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"SLUICE_OIDC_ISSUER": "https://sso/realms/s"}, "SLUICE_OIDC_AUDIENCE is not set"),
        ({"SLUICE_OIDC_AUDIENCE": "sluice"}, "SLUICE_OIDC_ISSUER is not set"),
        (
            {"SLUICE_OIDC_ISSUER": "sso.example.com", "SLUICE_OIDC_AUDIENCE": "a"},
            "SLUICE_OIDC_ISSUER='sso.example.com' is invalid",
        ),
        (
            {
                "SLUICE_OIDC_ISSUER": "https://sso/realms/s",
                "SLUICE_OIDC_AUDIENCE": "a",
                "SLUICE_OIDC_ALLOWED_TENANTS": "acme,Not A Tenant",
            },
            "SLUICE_OIDC_ALLOWED_TENANTS='Not A Tenant' is invalid",
        ),
        (
            {
                "SLUICE_OIDC_ISSUER": "https://sso/realms/s",
                "SLUICE_OIDC_AUDIENCE": "a",
                "SLUICE_OIDC_TENANT_CLAIM": "realm access",
            },
            "SLUICE_OIDC_TENANT_CLAIM='realm access' is invalid",
        ),
    ],
)
def test_oidc_mistakes_are_named(changes: dict[str, str], expected: str) -> None:
    assert expected in problems(**changes)


def test_each_process_needs_only_its_own_database_password() -> None:
    api = Settings.from_env(environment(SLUICE_POSTGRES_WRITER_PASSWORD=None))
    assert "password=" in api.postgres.reader_dsn
    with pytest.raises(ConfigError, match="SLUICE_POSTGRES_WRITER_PASSWORD is not set"):
        api.postgres.writer_dsn  # noqa: B018
    processor = Settings.from_env(environment(SLUICE_POSTGRES_READER_PASSWORD=None))
    assert "password=" in processor.postgres.writer_dsn
    with pytest.raises(ConfigError, match="SLUICE_POSTGRES_READER_PASSWORD is not set"):
        processor.postgres.reader_dsn  # noqa: B018


@pytest.mark.parametrize("host", ["10.77.0.12", "::", "fd00::12", "127.0.0.1", "stream-1.lab"])
def test_the_metrics_host_takes_an_address_or_a_host_name(host: str) -> None:
    assert Settings.from_env(environment(SLUICE_METRICS_HOST=host)).metrics_host == host
