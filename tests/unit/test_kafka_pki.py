"""Kafka's TLS material: a CA made once, broker certificates issued only when they no longer fit,
the operator's own CA and certificates validated, no key material ever leaked."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sluice_infra import kafka_pki
from sluice_infra.kafka_pki import (
    PkiError,
    ensure_ca,
    ensure_host_cert,
    host_cert_reasons,
    validate_host_cert,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STREAM = {"dns_names": ["stream", "stream.lab.internal"], "ip_addresses": ["10.77.0.12"]}


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return tmp_path / "pki" / "kafka"


def issued(pki: Path, host: str = "stream", **names) -> bool:
    return ensure_host_cert(pki, host, **{**STREAM, **names})


def chain_of(pki: Path, host: str = "stream") -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((pki / "hosts" / f"{host}.crt").read_bytes())


def key_of(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def build_certificate(
    subject: str,
    key,
    *,
    issuer: tuple[x509.Certificate, object] | None = None,
    ca: bool = False,
    days: float = 365,
    start_days_ago: float = 1,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    extended_usage: tuple = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    name: x509.Name | None = None,
) -> x509.Certificate:
    """A certificate made the way an operator's own PKI might: self-signed when no issuer."""
    now = datetime.now(UTC)
    name = name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=start_days_ago))
        .not_valid_after(now - timedelta(days=start_days_ago) + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca and extended_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_usage)), False)
    sans = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def write_ca(directory: Path, certificate: x509.Certificate, key) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(pem(certificate))
    (directory / "ca.key").write_bytes(key_pem(key))


# --- the CA ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_ca_is_created_once_private_and_a_ca(pki, key_type):
    assert ensure_ca(pki, key_type=key_type) is True

    assert mode(pki) == 0o700
    assert mode(pki / "ca.key") == 0o600
    assert (pki / "ca.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    certificate = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = key_of(pki / "ca.key")
    assert isinstance(key, ec.EllipticCurvePrivateKey if key_type == "ec" else rsa.RSAPrivateKey)
    if key_type == "rsa":
        assert key.key_size == 3072
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    certificate.verify_directly_issued_by(certificate)  # self-signed by that key
    lifetime = certificate.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=3649) < lifetime <= timedelta(days=3650)

    before = snapshot(pki)
    assert ensure_ca(pki, key_type=key_type) is False
    assert snapshot(pki) == before
    assert sorted(before) == ["ca.crt", "ca.key"]  # no temporary file left behind


def test_check_mode_writes_nothing(pki):
    assert ensure_ca(pki, check=True) is True
    assert ensure_host_cert(pki, "stream", **STREAM, check=True) is True
    assert not pki.exists()

    ensure_ca(pki)
    before = snapshot(pki)
    assert ensure_host_cert(pki, "stream", **STREAM, check=True) is True
    assert snapshot(pki) == before
    assert not (pki / "hosts").exists()


def test_operators_own_ca_is_kept_and_signs(pki):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    own = build_certificate("Example Corp Kafka CA", key, ca=True, days=1000)
    write_ca(pki, own, key)
    before = snapshot(pki)

    assert ensure_ca(pki) is False
    assert issued(pki) is True

    assert {k: v for k, v in snapshot(pki).items() if k.startswith("ca.")} == before
    leaf, ca = chain_of(pki)
    assert ca == own
    leaf.verify_directly_issued_by(own)


@pytest.mark.parametrize(
    ("kept", "expected"),
    [
        ("ca.key", r"ca\.key exists without ca\.crt: restore .* or delete .*ca\.key"),
        ("ca.crt", r"ca\.crt exists without ca\.key: add the CA's key as .*ca\.key"),
    ],
)
def test_half_a_ca_is_refused_and_left_alone(pki, kept, expected):
    ensure_ca(pki)
    for name in ["ca.crt", "ca.key"]:
        if name != kept:
            (pki / name).unlink()
    before = snapshot(pki)

    for call in (lambda: ensure_ca(pki), lambda: ensure_ca(pki, check=True), lambda: issued(pki)):
        with pytest.raises(PkiError, match=expected):
            call()
    assert snapshot(pki) == before


def test_an_expired_ca_is_refused(pki):
    key = ec.generate_private_key(ec.SECP256R1())
    write_ca(pki, build_certificate("Old CA", key, ca=True, days=10, start_days_ago=11), key)

    with pytest.raises(PkiError, match=r"ca\.crt expired on .*: put a renewed CA there"):
        ensure_ca(pki)
    with pytest.raises(PkiError, match="expired"):
        issued(pki)
    assert not (pki / "hosts").exists()


def test_a_ca_that_is_not_a_ca_or_not_its_key_is_refused(pki):
    key = ec.generate_private_key(ec.SECP256R1())
    write_ca(pki, build_certificate("leaf", key, ca=False), key)
    with pytest.raises(PkiError, match="is not a CA certificate"):
        ensure_ca(pki)

    other = ec.generate_private_key(ec.SECP256R1())
    write_ca(pki, build_certificate("CA", other, ca=True), key)
    with pytest.raises(PkiError, match=r"ca\.key is not the key of .*ca\.crt"):
        ensure_ca(pki)


def test_a_bad_ca_key_is_named_but_never_quoted(pki):
    ensure_ca(pki)
    secret = (pki / "ca.key").read_bytes()
    (pki / "ca.key").write_bytes(secret[:-80] + b"garbage\n-----END PRIVATE KEY-----\n")

    with pytest.raises(PkiError) as caught:
        ensure_ca(pki)

    message = str(caught.value)
    assert "ca.key (the CA key) is not a PEM private key" in message
    body = b"".join(secret.splitlines()[1:-1]).decode()
    assert not [i for i in range(len(body) - 12) if body[i : i + 12] in message]
    assert caught.value.__suppress_context__  # the parser's error is not shown either


# --- broker certificates --------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_host_certificate_is_what_kafka_needs(pki, key_type):
    ensure_ca(pki, key_type=key_type)
    assert ensure_host_cert(pki, "stream", **STREAM, key_type=key_type) is True

    key_path = pki / "hosts" / "stream.key"
    assert mode(key_path) == 0o600
    assert mode(pki / "hosts") == 0o700
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    key = key_of(key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey if key_type == "ec" else rsa.RSAPrivateKey)

    leaf, ca = chain_of(pki)
    assert ca == x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert leaf.subject.rfc4514_string() == "CN=stream,OU=kafka-broker,O=Sluice"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert leaf.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)

    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["stream", "stream.lab.internal"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.77.0.12")]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature and not key_usage.key_cert_sign
    assert key_usage.key_encipherment is (key_type == "rsa")
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = leaf.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=824) < lifetime <= timedelta(days=825)
    assert sorted(snapshot(pki / "hosts")) == ["stream.crt", "stream.key"]


def test_second_call_changes_nothing(pki):
    ensure_ca(pki)
    issued(pki)
    before = snapshot(pki)

    assert issued(pki) is False
    assert issued(pki, dns_names=["STREAM.lab.internal", "stream"]) is False  # same set
    assert snapshot(pki) == before


@pytest.mark.parametrize(
    "names",
    [
        {"dns_names": ["stream", "stream.lab.internal", "kafka.lab.internal"]},
        {"dns_names": ["stream"]},
        {"ip_addresses": ["10.77.0.13"]},
        {"ip_addresses": ["10.77.0.12", "fd77::12"]},
    ],
)
def test_changed_names_reissue_key_and_certificate(pki, names):
    ensure_ca(pki)
    issued(pki)
    before = snapshot(pki)

    assert host_cert_reasons(pki, "stream", **{**STREAM, **names}) == [
        "its subject alternative names differ"
    ]
    assert issued(pki, **names) is True

    after = snapshot(pki)
    assert after["hosts/stream.key"] != before["hosts/stream.key"]
    sans = chain_of(pki)[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    wanted = {**STREAM, **names}
    assert sans.value.get_values_for_type(x509.DNSName) == wanted["dns_names"]
    assert [str(a) for a in sans.value.get_values_for_type(x509.IPAddress)] == [
        str(ipaddress.ip_address(a)) for a in wanted["ip_addresses"]
    ]
    assert issued(pki, **names) is False


def test_near_expiry_reissues(pki):
    ensure_ca(pki)
    assert ensure_host_cert(pki, "stream", **STREAM, days=20, renew_days=10) is True
    assert ensure_host_cert(pki, "stream", **STREAM, days=20, renew_days=10) is False

    reasons = host_cert_reasons(pki, "stream", **STREAM, renew_days=25)
    assert len(reasons) == 1 and reasons[0].startswith("it expires on ")
    assert ensure_host_cert(pki, "stream", **STREAM, renew_days=25) is True

    lifetime = chain_of(pki)[0].not_valid_after_utc - datetime.now(UTC)
    assert lifetime > timedelta(days=824)
    assert ensure_host_cert(pki, "stream", **STREAM, renew_days=25) is False


def test_a_certificate_never_outlives_its_ca_and_then_does_not_churn(pki):
    ensure_ca(pki, days=100)
    issued(pki)
    leaf, ca = chain_of(pki)
    assert leaf.not_valid_after_utc == ca.not_valid_after_utc

    # Within renew_days of the end, but a new certificate could not last longer.
    assert ensure_host_cert(pki, "stream", **STREAM, renew_days=200, days=825) is False


def test_a_replaced_ca_reissues_every_certificate(pki):
    ensure_ca(pki)
    issued(pki)
    issued(pki, "stream2", dns_names=["stream2"], ip_addresses=[])
    for name in ["ca.crt", "ca.key"]:
        (pki / name).unlink()
    assert ensure_ca(pki) is True
    new_ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())

    assert "it is not signed by the current CA" in host_cert_reasons(pki, "stream", **STREAM)
    assert issued(pki) is True
    assert issued(pki, "stream2", dns_names=["stream2"], ip_addresses=[]) is True
    for host in ["stream", "stream2"]:
        leaf, ca = chain_of(pki, host)
        assert ca == new_ca
        leaf.verify_directly_issued_by(new_ca)


def test_mismatched_key_and_changed_key_type_reissue(pki):
    ensure_ca(pki)
    issued(pki)
    issued(pki, "stream2", dns_names=["stream2"], ip_addresses=[])
    hosts = pki / "hosts"
    (hosts / "stream.key").write_bytes((hosts / "stream2.key").read_bytes())

    assert host_cert_reasons(pki, "stream", **STREAM) == ["its key does not match the certificate"]
    assert issued(pki) is True
    assert host_cert_reasons(pki, "stream", **STREAM, key_type="rsa") == [
        "its key is ec, key_type asks for rsa"
    ]
    assert ensure_host_cert(pki, "stream", **STREAM, key_type="rsa") is True
    assert isinstance(key_of(hosts / "stream.key"), rsa.RSAPrivateKey)


@pytest.mark.parametrize(
    ("host", "names", "expected"),
    [
        ("stream", {"dns_names": [], "ip_addresses": []}, "no dns_names and no ip_addresses"),
        ("stream", {"ip_addresses": ["stream.lab"]}, "'stream.lab' is not an IPv4 or IPv6"),
        ("stream", {"dns_names": ["10.77.0.12/24"]}, "is not a DNS name"),
        ("../etc", {}, "host name '../etc' cannot name a broker certificate"),
        ("a,OU=admin", {}, "cannot name a broker certificate"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(pki, host, names, expected):
    ensure_ca(pki)
    with pytest.raises(PkiError, match=expected):
        ensure_host_cert(pki, host, **{**STREAM, **names})
    assert not (pki / "hosts").exists()


def test_renew_days_must_be_below_days(pki):
    ensure_ca(pki)
    with pytest.raises(PkiError, match=r"renew_days \(30\) must be less than days \(30\)"):
        ensure_host_cert(pki, "stream", **STREAM, days=30)


# --- bring your own broker certificate ------------------------------------------------------


@pytest.fixture
def own_ca(tmp_path: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = build_certificate("Example Corp CA", key, ca=True, days=1000)
    path = tmp_path / "corp-ca.crt"
    path.write_bytes(pem(certificate))
    return certificate, key, path


def own_leaf(tmp_path: Path, issuer, *, fmt=serialization.PrivateFormat.PKCS8, **kwargs):
    key = ec.generate_private_key(ec.SECP256R1())
    kwargs.setdefault("name", kafka_pki.host_subject("stream"))
    certificate = build_certificate("stream", key, issuer=issuer, **kwargs)
    cert_path, key_path = tmp_path / "stream.crt", tmp_path / "stream.key"
    cert_path.write_bytes(pem(certificate))
    key_path.write_bytes(key_pem(key, fmt))
    return cert_path, key_path


def test_a_good_own_certificate_has_no_problem(tmp_path, own_ca):
    ca, ca_key, ca_path = own_ca
    cert, key = own_leaf(tmp_path, (ca, ca_key), dns_names=("stream",), ip_addresses=("10.0.0.1",))
    assert validate_host_cert(cert, key, ca_path, ["stream"], ["10.0.0.1"], host="stream") == []


def test_own_certificate_missing_sans_is_reported(tmp_path, own_ca):
    ca, ca_key, ca_path = own_ca
    cert, key = own_leaf(tmp_path, (ca, ca_key), dns_names=("stream",))

    problems = validate_host_cert(cert, key, ca_path, ["stream", "stream.corp"], ["10.0.0.1"])

    assert problems == [
        f"{cert} lacks subject alternative name(s) stream.corp, 10.0.0.1: clients and brokers "
        "connecting by those names would refuse it; reissue it with them"
    ]


def test_own_certificate_without_any_san_is_reported(tmp_path, own_ca):
    ca, ca_key, ca_path = own_ca
    cert, key = own_leaf(tmp_path, (ca, ca_key))
    [problem] = validate_host_cert(cert, key, ca_path, ["stream"], [])
    assert "lacks subject alternative name(s) stream:" in problem


def test_own_certificate_problems_are_all_reported(tmp_path, own_ca):
    ca_path = own_ca[2]
    stranger = ec.generate_private_key(ec.SECP256R1())
    stranger_ca = build_certificate("Someone else", stranger, ca=True)
    cert, key = own_leaf(
        tmp_path,
        (stranger_ca, stranger),
        dns_names=("stream",),
        days=10,
        start_days_ago=20,
        extended_usage=(ExtendedKeyUsageOID.SERVER_AUTH,),
        name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stream.corp")]),
        fmt=serialization.PrivateFormat.TraditionalOpenSSL,
    )

    problems = "\n".join(validate_host_cert(cert, key, ca_path, ["stream"], [], host="stream"))

    for expected in [
        "is not an unencrypted PKCS#8 PEM key (BEGIN PRIVATE KEY)",
        "openssl pkcs8 -topk8 -nocrypt",
        f"does not chain to {ca_path}",
        "expired on",
        "extendedKeyUsage lacks clientAuth",
        "subject is CN=stream.corp: the broker principal rule expects "
        "CN=stream,OU=kafka-broker,O=Sluice",
    ]:
        assert expected in problems, problems
    assert "BEGIN EC PRIVATE KEY" not in problems and key.read_text()[40:80] not in problems


def test_own_certificate_through_an_intermediate_and_its_key(tmp_path, own_ca):
    ca, ca_key, ca_path = own_ca
    middle_key = ec.generate_private_key(ec.SECP256R1())
    middle = build_certificate("Issuing CA", middle_key, issuer=(ca, ca_key), ca=True)
    cert, key = own_leaf(tmp_path, (middle, middle_key), dns_names=("stream",))
    cert.write_bytes(cert.read_bytes() + pem(middle))

    assert validate_host_cert(cert, key, ca_path, ["stream"], []) == []

    key.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    assert validate_host_cert(cert, key, ca_path, ["stream"], []) == [
        f"{key} is not the key of {cert}: supply the matching pair"
    ]


# --- the action plugin ----------------------------------------------------------------------

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  become: false
  tasks:
    - sluice_kafka_pki:
        directory: "{{ pki }}"
        hosts: "{{ brokers }}"
      register: pki_result
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{ pki_result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      check_mode: false
"""


def run_plugin(tmp_path: Path, pki: Path, brokers: list[dict], *extra: str) -> dict:
    playbook, variables = tmp_path / "pki.yml", tmp_path / "vars.json"
    result_file = tmp_path / "result.json"
    playbook.write_text(PLAYBOOK)
    variables.write_text(
        json.dumps(
            {
                "pki": str(pki),
                "brokers": brokers,
                "result_file": str(result_file),
                "ansible_python_interpreter": sys.executable,
            }
        )
    )
    command = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local"]
    command += ["-e", f"@{variables}", *extra, str(playbook)]
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
        "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(result_file.read_text())


@pytest.mark.ansible
def test_plugin_reports_check_mode_then_issues_then_changes_nothing(tmp_path, pki):
    brokers = [{"name": "stream", **STREAM}, {"name": "stream2", "dns_names": ["stream2"]}]

    would = run_plugin(tmp_path, pki, brokers, "--check")
    assert not pki.exists()
    assert would["changed"] and would["ca_created"]
    assert would["issued"] == ["stream", "stream2"]

    first = run_plugin(tmp_path, pki, brokers)
    assert first["changed"] and first["ca_created"] and first["issued"] == ["stream", "stream2"]
    assert first["ca_cert"] == str(pki / "ca.crt")
    assert first["certs"]["stream2"] == {
        "cert": str(pki / "hosts" / "stream2.crt"),
        "key": str(pki / "hosts" / "stream2.key"),
    }
    written = snapshot(pki)
    assert not [v for k, v in written.items() if k.endswith(".key") and v.decode() in str(first)]

    again = run_plugin(tmp_path, pki, brokers)
    assert not again["changed"] and not again["ca_created"] and again["issued"] == []
    assert snapshot(pki) == written


@pytest.mark.ansible
def test_plugin_refuses_an_unusable_own_certificate_before_writing(tmp_path, pki, own_ca):
    ca, ca_key, _ = own_ca
    pki.mkdir(parents=True)
    (pki / "ca.crt").write_bytes(pem(ca))  # the company CA, its key stays with the company
    cert, key = own_leaf(tmp_path, (ca, ca_key), dns_names=("stream2",))
    brokers = [
        {"name": "stream", **STREAM},
        {"name": "stream2", "dns_names": ["stream2", "stream2.corp"], "cert": str(cert)},
    ]

    result = run_plugin(tmp_path, pki, brokers)
    assert result["failed"]
    assert "host stream2: cert and key go together" in result["msg"]

    brokers[1]["key"] = str(key)
    result = run_plugin(tmp_path, pki, brokers)
    assert result["failed"] and not result["changed"]
    assert "host stream2: " in result["msg"]
    assert "lacks subject alternative name(s) stream2.corp" in result["msg"]
    assert sorted(snapshot(pki)) == ["ca.crt"]

    # Every broker with its own certificate: no CA key needed.
    brokers = [brokers[1] | {"dns_names": ["stream2"], "name": "stream"}]
    result = run_plugin(tmp_path, pki, brokers)
    assert "failed" not in result or not result["failed"], result
    assert result["certs"]["stream"] == {"cert": str(cert), "key": str(key)}
    assert not result["changed"]


def load_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"_test_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documentation_matches_the_arguments():
    plugins = REPO / "ansible" / "plugins"
    spec = load_file(plugins / "action" / "sluice_kafka_pki.py").ARGUMENT_SPEC
    documented = yaml.safe_load(
        load_file(plugins / "modules" / "sluice_kafka_pki.py").DOCUMENTATION
    )

    def shape(options):
        return {
            name: (
                option["type"],
                option.get("default"),
                option.get("required", False),
                shape(option.get("options") or option.get("suboptions") or {}),
            )
            for name, option in options.items()
        }

    assert shape(documented["options"]) == shape(spec)
