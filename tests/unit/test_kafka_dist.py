"""The Kafka tarball: one shape from Maven or the Apache archive, verified, cached, reproducible."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path
from typing import BinaryIO

import pytest

from sluice_infra import kafka_dist
from sluice_infra.kafka_dist import (
    Artifact,
    KafkaDistError,
    ensure_archive_dist,
    ensure_maven_dist,
    logging_extras,
    main,
    parse_dependency_list,
    parse_sha512,
)

VERSION = "4.1.1"
TARBALL = f"kafka_2.13-{VERSION}.tgz"

# What the fake mvn resolves for Kafka's two artifacts: like 4.1, log4j2 but no SLF4J binding.
FAKE_CLOSURE = (
    "org.apache.kafka:kafka_2.13:jar:{v}:compile",
    "org.apache.kafka:kafka-tools:jar:{v}:compile",
    "org.apache.kafka:kafka-clients:jar:{v}:compile -- module kafka.clients (auto)",
    "org.slf4j:slf4j-api:jar:1.7.36:runtime -- module org.slf4j",
    "org.apache.logging.log4j:log4j-api:jar:2.24.3:runtime",
    "org.apache.logging.log4j:log4j-core:jar:2.24.3:runtime",
    "org.scala-lang:scala-library:jar:2.13.16:compile",
)

FAKE_MVN = """\
#!{python}
'''A stand-in for mvn dependency:list: logs its arguments, lists a fixed closure plus the pom's
extra dependencies, and puts a small jar for each into the local repository.'''
import json, os, sys, xml.etree.ElementTree as ET
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_MVN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
option = lambda name: next(a.split("=", 1)[1] for a in args if a.startswith(f"-D{{name}}="))
pom = ET.parse(args[args.index("-f") + 1])
ns = {{"m": "http://maven.apache.org/POM/4.0.0"}}
declared = [
    (d.find("m:groupId", ns).text, d.find("m:artifactId", ns).text, d.find("m:version", ns).text)
    for d in pom.findall("m:dependencies/m:dependency", ns)
]
version = next(v for g, a, v in declared if a == "kafka_2.13")
if version == "9.9.9":
    print("[ERROR] Failed to execute goal on project kafka-dist: Could not resolve dependencies "
          "for project sluice:kafka-dist:pom:9.9.9: Could not find artifact "
          "org.apache.kafka:kafka_2.13:jar:9.9.9 in sluice-kafka-dist")
    sys.exit(1)
lines = [line.format(v=version) for line in {closure!r}]
listed = {{tuple(line.split(":")[:2]) for line in lines}}
lines += [f"{{g}}:{{a}}:jar:{{v}}:compile" for g, a, v in declared if (g, a) not in listed]
repository = Path(option("maven.repo.local"))
for line in lines:
    g, a, _, v = line.split()[0].split(":")[:4]
    folder = repository.joinpath(*g.split("."), a, v)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{{a}}-{{v}}.jar").write_text(f"jar {{g}}:{{a}}:{{v}}\\n")
Path(option("outputFile")).write_text(
    "\\nThe following files have been resolved:\\n" + "".join(f"   {{l}}\\n" for l in lines)
)
"""


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``mvn`` first on PATH; returns the log of its calls (one JSON list per line)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN.format(python=sys.executable, closure=FAKE_CLOSURE))
    mvn.chmod(0o755)
    log = tmp_path / "mvn.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MVN_LOG", str(log))
    return log


def mvn_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


# -- checksum files -------------------------------------------------------------------------

DIGEST = hashlib.sha512(b"kafka").hexdigest()


def gpg_style(name: str, digest: str) -> str:
    """``gpg --print-md SHA512`` output: uppercase groups of 8, wrapped, indented."""
    groups = [digest.upper()[i : i + 8] for i in range(0, 128, 8)]
    indent = " " * (len(name) + 2)
    lines = [" ".join(groups[i : i + 6]) for i in range(0, 16, 6)]
    return f"{name}: " + f"\n{indent}".join(lines) + "\n"


def test_gpg_print_md_format_is_read():
    text = gpg_style(TARBALL, DIGEST)
    assert "\n" in text.strip() and DIGEST.upper()[:8] + " " in text
    assert parse_sha512(text, TARBALL) == DIGEST


def test_sha512sum_format_is_read_and_the_tarballs_line_chosen():
    assert parse_sha512(f"{DIGEST}  {TARBALL}\n", TARBALL) == DIGEST
    assert parse_sha512(f"{DIGEST.upper()} *{TARBALL}", TARBALL) == DIGEST
    other = hashlib.sha512(b"src").hexdigest()
    two = f"{other}  kafka-{VERSION}-src.tgz\n{DIGEST}  {TARBALL}\n"
    assert parse_sha512(two, TARBALL) == DIGEST


def test_bsd_and_bare_digest_formats_are_read():
    assert parse_sha512(f"SHA512 ({TARBALL}) = {DIGEST}\n", TARBALL) == DIGEST
    assert parse_sha512(f"{DIGEST}\n", TARBALL) == DIGEST


@pytest.mark.parametrize(
    "text",
    ["", "<html>404 Not Found</html>", f"{TARBALL}: 5A8F2C3E 1A2B", DIGEST[:100] + "  x.tgz"],
)
def test_unparseable_checksum_file_is_refused_naming_its_url(text):
    with pytest.raises(KafkaDistError, match=r"https://m/k\.tgz\.sha512 is not a SHA-512"):
        parse_sha512(text, TARBALL, source="https://m/k.tgz.sha512")


def test_checksum_of_another_file_is_refused():
    with pytest.raises(KafkaDistError, match=f"kafka-{VERSION}-src.tgz, not for {TARBALL}"):
        parse_sha512(gpg_style(f"kafka-{VERSION}-src.tgz", DIGEST), TARBALL)


def test_archive_urls_default_override_and_bad_template():
    assert kafka_dist.archive_urls(VERSION) == (
        f"https://archive.apache.org/dist/kafka/{VERSION}/{TARBALL}",
        f"https://archive.apache.org/dist/kafka/{VERSION}/{TARBALL}.sha512",
    )
    url, sha = kafka_dist.archive_urls(VERSION, "https://m/{version}/k.tgz", "https://m/sums")
    assert (url, sha) == (f"https://m/{VERSION}/k.tgz", "https://m/sums")
    with pytest.raises(KafkaDistError, match=r"only\s+placeholder is \{version\}"):
        kafka_dist.archive_urls(VERSION, "https://m/{release}/k.tgz")
    with pytest.raises(KafkaDistError, match=r"'4\.1' is not a release version"):
        kafka_dist.archive_urls("4.1")


# -- method archive -------------------------------------------------------------------------


def release_tarball(top: str = f"kafka_2.13-{VERSION}") -> bytes:
    """A small stand-in for the Apache release: bin/, config/, libs/*.jar under ``top``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [
            ("bin/kafka-server-start.sh", b"#!/bin/sh\n"),
            ("config/server.properties", b"process.roles=broker\n"),
            (f"libs/kafka_2.13-{VERSION}.jar", b"jar"),
        ]:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class FakeFetcher:
    """Serves ``files`` by URL and counts requests; an unknown URL is an OSError."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []

    def __call__(self, url: str, handle: BinaryIO) -> None:
        self.requests.append(url)
        if url not in self.files:
            raise OSError(f"404 {url}")
        handle.write(self.files[url])


URL = f"https://archive.apache.org/dist/kafka/{VERSION}/{TARBALL}"


def test_archive_is_cached_after_verification_then_reused(tmp_path: Path):
    tarball = release_tarball()
    sums = gpg_style(TARBALL, hashlib.sha512(tarball).hexdigest()).encode()
    fetch = FakeFetcher({URL: tarball, URL + ".sha512": sums})

    first = ensure_archive_dist(VERSION, tmp_path, fetch=fetch)

    assert first.changed is True
    assert first.path == tmp_path / "kafka" / TARBALL
    assert first.path.read_bytes() == tarball
    assert first.sha256 == hashlib.sha256(tarball).hexdigest()
    assert first.dist_name == f"kafka_2.13-{VERSION}"
    sidecar = first.path.with_name(TARBALL + ".sha256")
    assert sidecar.read_text() == f"{first.sha256}  {TARBALL}\n"
    assert sorted(fetch.requests) == [URL, URL + ".sha512"]

    second = ensure_archive_dist(VERSION, tmp_path, fetch=fetch)
    assert (second.changed, second.sha256, second.path) == (False, first.sha256, first.path)
    assert len(fetch.requests) == 2, "a cached tarball must not be downloaded again"


def test_archive_from_local_files_by_template_and_sha512sum_file(tmp_path: Path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    tarball = release_tarball()
    (mirror / TARBALL).write_bytes(tarball)
    (mirror / "SUMS").write_text(f"{hashlib.sha512(tarball).hexdigest()}  {TARBALL}\n")

    dist = ensure_archive_dist(
        VERSION,
        tmp_path / "cache",
        url_template=f"file://{mirror}/kafka_2.13-{{version}}.tgz",
        sha512_url=f"file://{mirror}/SUMS",
    )

    assert dist.changed and dist.path.read_bytes() == tarball


def test_archive_mismatch_is_refused_and_nothing_cached(tmp_path: Path):
    tarball = release_tarball()
    wrong = hashlib.sha512(b"another tarball").hexdigest()
    fetch = FakeFetcher({URL: tarball, URL + ".sha512": gpg_style(TARBALL, wrong).encode()})

    with pytest.raises(KafkaDistError) as error:
        ensure_archive_dist(VERSION, tmp_path, fetch=fetch)

    message = str(error.value)
    assert URL in message and URL + ".sha512" in message
    assert f"expected SHA-512 {wrong}" in message
    assert f"got {hashlib.sha512(tarball).hexdigest()}" in message
    assert not [p.name for p in (tmp_path / "kafka").iterdir() if not p.name.endswith(".lock")]


def test_archive_unparseable_checksum_is_refused_before_the_download(tmp_path: Path):
    fetch = FakeFetcher({URL: release_tarball(), URL + ".sha512": b"<html>moved</html>"})

    with pytest.raises(KafkaDistError, match=rf"{URL}\.sha512 is not a SHA-512 checksum file"):
        ensure_archive_dist(VERSION, tmp_path, fetch=fetch)
    assert fetch.requests == [URL + ".sha512"]


def test_archive_unreachable_url_names_it_and_the_ways_out(tmp_path: Path):
    with pytest.raises(
        KafkaDistError, match=rf"cannot download the checksum {URL}\.sha512.*mirror"
    ):
        ensure_archive_dist(VERSION, tmp_path, fetch=FakeFetcher({}))


def test_archive_that_is_not_a_binary_release_is_refused(tmp_path: Path):
    source = release_tarball(top=f"kafka-{VERSION}-src")
    sums = f"{hashlib.sha512(source).hexdigest()}  {TARBALL}".encode()
    fetch = FakeFetcher({URL: source, URL + ".sha512": sums})

    with pytest.raises(KafkaDistError, match="not a Kafka binary release"):
        ensure_archive_dist(VERSION, tmp_path, fetch=fetch)
    assert not (tmp_path / "kafka" / TARBALL).exists()


# -- method maven ---------------------------------------------------------------------------


def test_maven_tarball_has_the_release_layout_and_the_log4j2_binding(tmp_path: Path, fake_mvn):
    dist = ensure_maven_dist(VERSION, tmp_path)

    assert dist.changed is True
    assert dist.path == tmp_path / "kafka" / f"kafka_2.13-{VERSION}.maven.tar.gz"
    top = f"kafka_2.13-{VERSION}"
    entries = members(dist.path)
    names = [m.name for m in entries]
    jars = [
        "kafka-clients-4.1.1.jar",
        "kafka-tools-4.1.1.jar",
        "kafka_2.13-4.1.1.jar",
        "log4j-api-2.24.3.jar",
        "log4j-core-2.24.3.jar",
        "log4j-slf4j-impl-2.24.3.jar",  # added: the binding at the resolved log4j2 version
        "scala-library-2.13.16.jar",
        "slf4j-api-1.7.36.jar",
    ]
    assert names == [top, f"{top}/libs", *(f"{top}/libs/{jar}" for jar in jars)]
    assert all(
        (m.mtime, m.uid, m.gid, m.uname, m.gname) == (946684800, 0, 0, "root", "root")
        for m in entries
    )
    assert [stat.S_IMODE(m.mode) for m in entries[:3]] == [0o755, 0o755, 0o644]
    with tarfile.open(dist.path) as tar:
        jar = tar.extractfile(f"{top}/libs/log4j-slf4j-impl-2.24.3.jar")
        assert jar.read() == b"jar org.apache.logging.log4j:log4j-slf4j-impl:2.24.3\n"
    assert dist.sha256 == hashlib.sha256(dist.path.read_bytes()).hexdigest()


def test_maven_uses_the_cache_repository_mirror_and_pinned_plugin(tmp_path: Path, fake_mvn):
    ensure_maven_dist(VERSION, tmp_path, repository_url="https://nexus.example/maven2/")

    calls = mvn_calls(fake_mvn)
    assert len(calls) == 2  # the closure, then again with the logging extras
    for call in calls:
        assert call[:2] == ["-B", "-q"]
        assert "org.apache.maven.plugins:maven-dependency-plugin:3.11.0:list" in call
        assert f"-Dmaven.repo.local={tmp_path.resolve() / 'maven'}" in call
    assert (tmp_path / "maven" / "org" / "apache" / "kafka").is_dir()
    assert not list(tmp_path.glob(".kafka-dist-*")), "the work folder is removed"


def test_maven_tarball_is_reproducible(tmp_path: Path, fake_mvn):
    first = ensure_maven_dist(VERSION, tmp_path / "a")
    first_bytes = first.path.read_bytes()
    first.path.unlink()
    for jar in (tmp_path / "a" / "maven").rglob("*.jar"):
        os.utime(jar, (1_000_000_000, 1_000_000_000))  # other times, same contents
    second = ensure_maven_dist(VERSION, tmp_path / "a")
    elsewhere = ensure_maven_dist(VERSION, tmp_path / "b")

    assert second.changed and second.path.read_bytes() == first_bytes
    assert elsewhere.path.read_bytes() == first_bytes
    assert first.sha256 == second.sha256 == elsewhere.sha256
    # Nor does the clock: the gzip header has no file name (FLG 0) and no time (MTIME 0).
    assert first_bytes[:2] == b"\x1f\x8b" and first_bytes[3:8] == bytes(5)


def test_maven_second_call_changes_nothing_and_runs_no_mvn(tmp_path: Path, fake_mvn):
    first = ensure_maven_dist(VERSION, tmp_path)
    calls = len(mvn_calls(fake_mvn))
    before = first.path.stat().st_mtime_ns

    second = ensure_maven_dist(VERSION, tmp_path)

    assert second == kafka_dist.KafkaDist(first.path, first.dist_name, False, first.sha256)
    assert len(mvn_calls(fake_mvn)) == calls
    assert first.path.stat().st_mtime_ns == before


def test_maven_tarball_without_a_matching_sidecar_is_rebuilt(tmp_path: Path, fake_mvn):
    first = ensure_maven_dist(VERSION, tmp_path)
    first.path.write_bytes(first.path.read_bytes()[:100])  # an interrupted copy, say

    again = ensure_maven_dist(VERSION, tmp_path)

    assert again.changed is True and again.sha256 == first.sha256


def test_missing_mvn_names_the_debian_package(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn there

    with pytest.raises(KafkaDistError, match=r"mvn not found.*package `maven`"):
        ensure_maven_dist(VERSION, tmp_path / "cache")


def test_unknown_version_names_the_version_and_the_repository(tmp_path: Path, fake_mvn):
    with pytest.raises(KafkaDistError) as error:
        ensure_maven_dist("9.9.9", tmp_path, repository_url="https://nexus.example/maven2")

    message = str(error.value)
    assert message.startswith("Kafka 9.9.9 does not resolve from https://nexus.example/maven2")
    assert "Could not find artifact org.apache.kafka:kafka_2.13:jar:9.9.9" in message
    assert not list((tmp_path / "kafka").glob("*.tar.gz"))


def test_repository_url_must_be_a_url(tmp_path: Path, fake_mvn):
    with pytest.raises(KafkaDistError, match=r"'repo\.example/maven2' is not an http"):
        ensure_maven_dist(VERSION, tmp_path, repository_url="repo.example/maven2")


def test_settings_mirror_every_repository_to_the_url():
    settings = kafka_dist.settings_xml("https://nexus.example/m2?a=1&b=2")
    assert "<mirrorOf>*</mirrorOf>" in settings
    assert "<url>https://nexus.example/m2?a=1&amp;b=2</url>" in settings


# -- resolution details ---------------------------------------------------------------------


def test_dependency_list_output_is_parsed_with_modules_and_classifiers():
    text = (
        "\nThe following files have been resolved:\n"
        "   org.apache.kafka:kafka-clients:jar:4.1.1:compile -- module kafka.clients (auto)\n"
        "   io.netty:netty-tcnative:jar:linux-x86_64:2.0.1:runtime\n"
        "   junit:junit:jar:4.13:test\n"
    )
    assert parse_dependency_list(text) == [
        Artifact("io.netty", "netty-tcnative", "2.0.1", "jar", "linux-x86_64"),
        Artifact("org.apache.kafka", "kafka-clients", "4.1.1"),
    ]


def a(coordinates: str) -> Artifact:
    group, artifact, version = coordinates.split(":")
    return Artifact(group, artifact, version)


def test_logging_extras_for_kafka_4_0_which_brings_no_log4j2():
    extras, pins = logging_extras([a("org.slf4j:slf4j-api:1.7.36")])
    fallback = kafka_dist.LOG4J_FALLBACK_VERSION
    assert extras == [
        a(f"org.apache.logging.log4j:log4j-api:{fallback}"),
        a(f"org.apache.logging.log4j:log4j-core:{fallback}"),
        a(f"org.apache.logging.log4j:log4j-slf4j-impl:{fallback}"),
    ]
    assert a("org.slf4j:slf4j-api:1.7.36") in pins


def test_logging_extras_follow_slf4j_2_and_add_nothing_when_complete():
    core = a("org.apache.logging.log4j:log4j-core:2.25.5")
    api = a("org.apache.logging.log4j:log4j-api:2.25.5")
    extras, _ = logging_extras([a("org.slf4j:slf4j-api:2.0.17"), core, api])
    assert extras == [a("org.apache.logging.log4j:log4j-slf4j2-impl:2.25.5")]
    binding = a("org.apache.logging.log4j:log4j-slf4j-impl:2.25.5")
    assert logging_extras([a("org.slf4j:slf4j-api:1.7.36"), core, api, binding])[0] == []


def test_jar_names_shared_by_two_groups_get_their_group():
    names = kafka_dist.libs_names([a("javax.activation:activation:1.1"), a("x.y:activation:1.1")])
    assert [name for name, _ in names] == [
        "javax.activation.activation-1.1.jar",
        "x.y.activation-1.1.jar",
    ]


def test_cli_prints_the_dist_as_json(tmp_path: Path, fake_mvn, capsys):
    assert main(["maven", "--version", VERSION, "--cache-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "path": str(tmp_path / "kafka" / f"kafka_2.13-{VERSION}.maven.tar.gz"),
        "dist_name": f"kafka_2.13-{VERSION}",
        "changed": True,
        "sha256": hashlib.sha256(Path(printed["path"]).read_bytes()).hexdigest(),
    }


def test_cli_reports_errors_on_stderr(tmp_path: Path, capsys):
    assert main(["archive", "--version", "x", "--cache-dir", str(tmp_path)]) == 1
    assert "error: Kafka version 'x' is not a release version" in capsys.readouterr().err
