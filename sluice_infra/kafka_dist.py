"""The Kafka install artifact: resolved once on the Ansible controller, cached, copied to hosts.

Two methods give one shape, a gzipped tarball whose single top folder is ``kafka_2.13-<version>/``
with ``libs/*.jar`` inside; the role unpacks it into ``/opt/kafka/<version>/``:

- ``maven`` (default): ``org.apache.kafka:kafka_2.13`` and ``org.apache.kafka:kafka-tools`` with
  their runtime dependencies, resolved by the controller's ``mvn`` from a Maven repository
  (Maven Central or an internal mirror of it), plus the logging jars the broker and the tools need
  at runtime that Kafka's poms leave out (see :func:`logging_extras`). Written as
  ``<cache_dir>/kafka/kafka_2.13-<version>.maven.tar.gz``, byte for byte reproducible.
- ``archive``: the official Apache tarball, verified against its ``.sha512`` before it is kept
  as ``<cache_dir>/kafka/kafka_2.13-<version>.tgz``.

Every tarball has a ``.sha256`` sidecar (``sha256sum`` format), written last: a tarball whose
sidecar is present and matches is complete, and is not built or downloaded again. Maven's local
repository, ``<cache_dir>/maven``, is kept between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape

SCALA_VERSION = "2.13"
METHODS = ("maven", "archive")
DEFAULT_REPOSITORY_URL = "https://repo.maven.apache.org/maven2"
DEFAULT_ARCHIVE_URL_TEMPLATE = (
    "https://archive.apache.org/dist/kafka/{version}/kafka_2.13-{version}.tgz"
)
#: Kafka's artifacts in the tarball: the broker (with kafka-storage, kafka-configs...) and the
#: command line tools (kafka-topics, kafka-metadata-quorum, the console clients, perf tests).
KAFKA_ARTIFACTS = ("kafka_2.13", "kafka-tools")
#: Pinned, so a resolution does not depend on which plugin version Maven would pick.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0"
#: log4j2 for a Kafka whose poms bring none (4.0.x); the version the 4.0 release tarball ships.
LOG4J_FALLBACK_VERSION = "2.24.3"
LOG4J_GROUP = "org.apache.logging.log4j"

#: Fixed metadata of every tarball entry, so the same jars give the same bytes.
_MTIME = 946684800  # 2000-01-01T00:00:00Z
_VERSION_PATTERN = re.compile(r"\d+\.\d+\.\d+(?:-[A-Za-z0-9.]+)?")
_CHUNK = 1 << 20

#: ``fetch(url, handle)`` writes the body at ``url`` into ``handle``; raises OSError on failure.
Fetcher = Callable[[str, BinaryIO], None]


class KafkaDistError(RuntimeError):
    """The Kafka artifact cannot be resolved or verified; the message says what to do."""


@dataclass(frozen=True)
class KafkaDist:
    """A cached Kafka tarball: what the role copies to its hosts."""

    path: Path
    dist_name: str
    changed: bool
    sha256: str

    def as_dict(self) -> dict[str, str | bool]:
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True, order=True)
class Artifact:
    """A resolved Maven artifact, as ``mvn dependency:list`` prints it."""

    group: str
    artifact: str
    version: str
    type: str = "jar"
    classifier: str = ""

    def file_name(self) -> str:
        classifier = f"-{self.classifier}" if self.classifier else ""
        return f"{self.artifact}-{self.version}{classifier}.{self.type}"

    def repository_path(self, repository: Path) -> Path:
        """Where Maven keeps this artifact's file in the local ``repository``."""
        folder = Path(repository, *self.group.split("."), self.artifact, self.version)
        return folder / self.file_name()


def dist_name(version: str) -> str:
    """The tarball's top folder, as in the official release: ``kafka_2.13-<version>``."""
    return f"kafka_{SCALA_VERSION}-{version}"


def check_version(version: str) -> str:
    if not _VERSION_PATTERN.fullmatch(version or ""):
        raise KafkaDistError(
            f"Kafka version {version!r} is not a release version: use e.g. 4.1.1 (x.y.z)"
        )
    return version


def ensure_dist(
    method: str,
    version: str,
    cache_dir: Path,
    *,
    repository_url: str = DEFAULT_REPOSITORY_URL,
    archive_url_template: str = DEFAULT_ARCHIVE_URL_TEMPLATE,
    archive_sha512_url: str | None = None,
    fetch: Fetcher | None = None,
) -> KafkaDist:
    """The Kafka tarball of ``version`` by ``method``, built or downloaded unless cached."""
    if method == "maven":
        return ensure_maven_dist(version, cache_dir, repository_url=repository_url)
    if method == "archive":
        return ensure_archive_dist(
            version,
            cache_dir,
            url_template=archive_url_template,
            sha512_url=archive_sha512_url,
            fetch=fetch,
        )
    raise KafkaDistError(f"Kafka dist method {method!r} is unknown: use one of {METHODS}")


# -- cache -----------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _cached(path: Path) -> str | None:
    """The sha256 of ``path`` if it is complete: its sidecar exists and matches it."""
    sidecar = _sidecar(path)
    if not (path.is_file() and sidecar.is_file()):
        return None
    recorded = sidecar.read_text().split()[:1]
    actual = _file_sha256(path)
    return actual if recorded == [actual] else None


def _publish(temporary: Path, path: Path) -> str:
    """Move the finished ``temporary`` to ``path``, then write its sidecar; return its sha256."""
    sha256 = _file_sha256(temporary)
    _sidecar(path).unlink(missing_ok=True)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    with _temporary_beside(_sidecar(path)) as sidecar:
        sidecar.write_text(f"{sha256}  {path.name}\n")
        os.chmod(sidecar, 0o644)
        os.replace(sidecar, _sidecar(path))
    return sha256


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A temporary file name beside ``path``, removed unless it was renamed."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _kafka_dir(cache_dir: Path) -> Path:
    folder = Path(cache_dir) / "kafka"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KafkaDistError(
            f"cannot create the Kafka cache {folder} ({exc.strerror}): choose a cache_dir the "
            "controller's user can write, or create it for that user"
        ) from exc
    return folder


@contextlib.contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    """Serialise runs building the same tarball (two playbooks, or a CLI beside a playbook)."""
    with open(folder / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- method maven ----------------------------------------------------------------------------


def maven_tarball_name(version: str) -> str:
    return f"{dist_name(version)}.maven.tar.gz"


def ensure_maven_dist(
    version: str, cache_dir: Path, *, repository_url: str = DEFAULT_REPOSITORY_URL
) -> KafkaDist:
    """Resolve Kafka ``version`` with ``mvn`` into a reproducible tarball, unless cached."""
    check_version(version)
    repository_url = _check_repository_url(repository_url)
    folder = _kafka_dir(cache_dir)
    path = folder / maven_tarball_name(version)
    with _locked(folder, path.name):
        sha256 = _cached(path)
        if sha256 is not None:
            return KafkaDist(path, dist_name(version), changed=False, sha256=sha256)
        mvn = _mvn()
        local_repository = Path(cache_dir).resolve() / "maven"
        artifacts = resolve_artifacts(mvn, version, repository_url, local_repository)
        files = {name: artifact.repository_path(local_repository) for name, artifact in artifacts}
        with _temporary_beside(path) as temporary:
            write_tarball(temporary, dist_name(version), files)
            sha256 = _publish(temporary, path)
    return KafkaDist(path, dist_name(version), changed=True, sha256=sha256)


def _check_repository_url(url: str) -> str:
    if not re.fullmatch(r"(https?|file)://\S+", url or ""):
        raise KafkaDistError(
            f"Maven repository URL {url!r} is not an http(s):// or file:// URL: use e.g. "
            f"{DEFAULT_REPOSITORY_URL} or your internal mirror of Maven Central"
        )
    return url.rstrip("/")


def _mvn() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise KafkaDistError(
            "mvn not found on the controller's PATH: the maven method resolves Kafka with Maven; "
            "install it (Debian/Ubuntu package `maven`: apt-get install maven, with a JDK) or use "
            "the archive method"
        )
    return found


def pom_xml(version: str, extras: Sequence[Artifact] = (), pins: Sequence[Artifact] = ()) -> str:
    """A pom depending on Kafka's artifacts and ``extras``, with ``pins`` managed."""

    def dependency(group: str, artifact: str, version: str) -> str:
        return (
            f"    <dependency><groupId>{escape(group)}</groupId>"
            f"<artifactId>{escape(artifact)}</artifactId>"
            f"<version>{escape(version)}</version></dependency>\n"
        )

    kafka = [("org.apache.kafka", name, version) for name in KAFKA_ARTIFACTS]
    extra = [(a.group, a.artifact, a.version) for a in extras]
    managed = "".join(dependency(a.group, a.artifact, a.version) for a in pins)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>sluice</groupId>\n"
        f"  <artifactId>kafka-dist</artifactId>\n  <version>{escape(version)}</version>\n"
        "  <packaging>pom</packaging>\n"
        f"  <dependencyManagement><dependencies>\n{managed}  </dependencies>"
        "</dependencyManagement>\n"
        "  <dependencies>\n"
        + "".join(dependency(*coordinates) for coordinates in kafka + extra)
        + "  </dependencies>\n</project>\n"
    )


def settings_xml(repository_url: str) -> str:
    """Maven settings sending every download, plugins included, to ``repository_url``."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">\n'
        "  <mirrors>\n    <mirror>\n      <id>sluice-kafka-dist</id>\n"
        "      <mirrorOf>*</mirrorOf>\n"
        f"      <url>{escape(repository_url)}</url>\n"
        "    </mirror>\n  </mirrors>\n</settings>\n"
    )


_LIST_LINE = re.compile(
    r"^\s*(?P<group>[^:\s]+):(?P<artifact>[^:\s]+):(?P<type>[^:\s]+)"
    r"(?::(?P<classifier>[^:\s]+))?:(?P<version>[^:\s]+):(?P<scope>compile|runtime)\b"
)


def parse_dependency_list(text: str) -> list[Artifact]:
    """The artifacts in ``mvn dependency:list`` output (compile and runtime scopes)."""
    found = []
    for line in text.splitlines():
        match = _LIST_LINE.match(line)
        if match:
            found.append(
                Artifact(
                    match["group"],
                    match["artifact"],
                    match["version"],
                    match["type"],
                    match["classifier"] or "",
                )
            )
    return sorted(set(found))


def logging_extras(artifacts: Sequence[Artifact]) -> tuple[list[Artifact], list[Artifact]]:
    """(extra dependencies, version pins) so that the broker and the tools log through log4j2.

    Kafka 4.x logs through SLF4J to log4j2, but its poms carry at most ``log4j-api`` and
    ``log4j-core`` (4.1+; none in 4.0), never the SLF4J binding: without one, SLF4J prints
    "NOP logger" and the broker logs nothing. Adds the binding matching the resolved
    ``slf4j-api`` (``log4j-slf4j-impl`` for 1.x, ``log4j-slf4j2-impl`` for 2.x) at the resolved
    log4j2 version, and log4j2 itself when missing; pins keep every log4j2 jar at one version.
    """
    by_name = {(a.group, a.artifact): a for a in artifacts}
    core = by_name.get((LOG4J_GROUP, "log4j-core"))
    log4j_version = core.version if core else LOG4J_FALLBACK_VERSION
    slf4j = by_name.get(("org.slf4j", "slf4j-api"))
    slf4j_1 = slf4j is None or slf4j.version.startswith("1.")
    binding = "log4j-slf4j-impl" if slf4j_1 else "log4j-slf4j2-impl"
    wanted = ["log4j-api", "log4j-core", binding]
    extras = [
        Artifact(LOG4J_GROUP, name, log4j_version)
        for name in wanted
        if (LOG4J_GROUP, name) not in by_name
    ]
    pins = [Artifact(LOG4J_GROUP, name, log4j_version) for name in wanted]
    if slf4j:
        pins.append(slf4j)
    return extras, pins


def _run_mvn(mvn: str, work: Path, goal: Sequence[str], version: str, repository_url: str) -> None:
    command = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-s",
        str(work / "settings.xml"),
        "-f",
        str(work / "pom.xml"),
        *goal,
    ]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("[ERROR]")]
    detail = (errors or output.strip().splitlines()[-3:] or [f"exit {result.returncode}"])[0]
    detail = detail.removeprefix("[ERROR]").strip()
    if re.search(r"could not (be )?(find|resolve)", output, re.IGNORECASE):
        raise KafkaDistError(
            f"Kafka {version} does not resolve from {repository_url}: {detail[:600]}. "
            f"Check that {version} is a released Kafka version "
            f"({repository_url}/org/apache/kafka/kafka_2.13/ lists them) and that the repository "
            "is reachable from the controller and mirrors Maven Central"
        )
    raise KafkaDistError(f"mvn failed resolving Kafka {version} from {repository_url}: {detail}")


def _dependency_list(
    mvn: str, work: Path, version: str, repository_url: str, local_repository: Path
) -> list[Artifact]:
    listing = work / "dependencies.txt"
    _run_mvn(
        mvn,
        work,
        [
            f"{DEPENDENCY_PLUGIN}:list",
            "-DincludeScope=runtime",
            f"-DoutputFile={listing}",
            "-DappendOutput=false",
            f"-Dmaven.repo.local={local_repository}",
        ],
        version,
        repository_url,
    )
    return parse_dependency_list(listing.read_text())


def resolve_artifacts(
    mvn: str, version: str, repository_url: str, local_repository: Path
) -> list[tuple[str, Artifact]]:
    """(file name in libs/, artifact) for every jar of Kafka ``version``, downloaded into
    ``local_repository``: Kafka's runtime closure, then again with :func:`logging_extras`."""
    local_repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kafka-dist-", dir=local_repository.parent) as tmp:
        work = Path(tmp)
        (work / "settings.xml").write_text(settings_xml(repository_url))
        (work / "pom.xml").write_text(pom_xml(version))
        artifacts = _dependency_list(mvn, work, version, repository_url, local_repository)
        extras, pins = logging_extras(artifacts)
        if extras:
            (work / "pom.xml").write_text(pom_xml(version, extras, pins))
            artifacts = _dependency_list(mvn, work, version, repository_url, local_repository)
    jars = [a for a in artifacts if a.type == "jar"]
    if not any(a.artifact == "kafka_2.13" for a in jars):
        raise KafkaDistError(
            f"mvn resolved Kafka {version} from {repository_url} without the kafka_2.13 jar: "
            "check that the repository serves org.apache.kafka artifacts"
        )
    for artifact in jars:
        if not (file := artifact.repository_path(local_repository)).is_file():
            raise KafkaDistError(
                f"mvn listed {artifact.file_name()} but {file} is missing: "
                f"delete {local_repository} and run again"
            )
    return libs_names(jars)


def libs_names(jars: Sequence[Artifact]) -> list[tuple[str, Artifact]]:
    """Each jar's file name in libs/, as the release names it (``artifact-version.jar``);
    the group id goes in front of names two groups share."""
    counts: dict[str, int] = {}
    for jar in jars:
        counts[jar.file_name()] = counts.get(jar.file_name(), 0) + 1
    named = [
        (jar.file_name() if counts[jar.file_name()] == 1 else f"{jar.group}.{jar.file_name()}", jar)
        for jar in jars
    ]
    return sorted(named, key=lambda item: item[0])


def write_tarball(path: Path, top: str, files: dict[str, Path]) -> None:
    """A gzipped tar of ``top/libs/<name>`` for each of ``files``, reproducible: sorted
    entries, fixed mtime, root owner, 0755/0644 modes, no name or time in the gzip header."""

    def entry(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.mtime = kind, mode, size, _MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(entry(f"{top}/", tarfile.DIRTYPE, 0o755))
        tar.addfile(entry(f"{top}/libs/", tarfile.DIRTYPE, 0o755))
        for name in sorted(files):
            source = files[name]
            with open(source, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                tar.addfile(entry(f"{top}/libs/{name}", tarfile.REGTYPE, 0o644, size), handle)
        raw.flush()
        os.fsync(raw.fileno())


# -- method archive --------------------------------------------------------------------------


def archive_tarball_name(version: str) -> str:
    return f"{dist_name(version)}.tgz"


def archive_urls(
    version: str,
    url_template: str = DEFAULT_ARCHIVE_URL_TEMPLATE,
    sha512_url: str | None = None,
) -> tuple[str, str]:
    """(tarball URL, checksum URL): the template with ``{version}``; the checksum beside it."""
    check_version(version)
    try:
        url = url_template.format(version=version)
    except (KeyError, IndexError, ValueError) as exc:
        raise KafkaDistError(
            f"archive URL template {url_template!r} does not format ({exc!r}): the only "
            "placeholder is {version}, e.g. " + DEFAULT_ARCHIVE_URL_TEMPLATE
        ) from None
    return url, sha512_url or f"{url}.sha512"


_SHA512SUM_LINE = re.compile(r"^\\?([0-9A-Fa-f]{128})\s+\*?(\S.*?)\s*$")
_BSD_LINE = re.compile(r"^SHA512\s*\((.+)\)\s*=\s*([0-9A-Fa-f]{128})\s*$")


def parse_sha512(text: str, file_name: str, source: str = "the checksum file") -> str:
    """The lowercase SHA-512 for ``file_name`` in a checksum file's ``text``.

    Reads ``sha512sum`` lines (``<hex>  <file>``, one or several files), BSD lines
    (``SHA512 (<file>) = <hex>``), ``gpg --print-md SHA512`` output (``<file>: 5A8F2C3E ...``,
    uppercase groups over several lines) and a bare digest. A file naming only other files, or
    not parseable, is an error naming ``source``.
    """
    stripped = text.strip()
    named: dict[str, str] = {}
    for line in stripped.splitlines():
        match = _SHA512SUM_LINE.match(line.strip()) or _BSD_LINE.match(line.strip())
        if match is None:
            named = {}
            break
        digest, name = match.groups() if match.re is _SHA512SUM_LINE else match.groups()[::-1]
        named[Path(name).name] = digest.lower()
    if not named and ":" in stripped:
        name, _, rest = stripped.partition(":")
        digest = re.sub(r"\s+", "", rest)
        if re.fullmatch(r"[0-9A-Fa-f]{128}", digest):
            named[Path(name.strip()).name] = digest.lower()
    if not named and re.fullmatch(r"[0-9A-Fa-f]{128}", re.sub(r"\s+", "", stripped)):
        return re.sub(r"\s+", "", stripped).lower()
    if not named:
        first = stripped.splitlines()[0][:120] if stripped else "(empty)"
        raise KafkaDistError(
            f"{source} is not a SHA-512 checksum file (sha512sum or gpg --print-md format); it "
            f"starts with {first!r}: point archive_sha512_url at the release's .sha512"
        )
    if file_name not in named:
        raise KafkaDistError(
            f"{source} has checksums for {', '.join(sorted(named))}, not for {file_name}: "
            "point archive_sha512_url at the .sha512 of the tarball you download"
        )
    return named[file_name]


def urllib_fetch(url: str, handle: BinaryIO) -> None:
    """Fetch ``url`` (http, https or file) into ``handle``."""
    # The URL is an operator's setting; file:// serves a mirror on the controller's disk.
    with urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, handle, _CHUNK)


def _fetch(fetch: Fetcher, url: str, handle: BinaryIO, what: str) -> None:
    try:
        fetch(url, handle)
    except (OSError, urllib.error.URLError) as exc:
        raise KafkaDistError(
            f"cannot download the {what} {url}: {exc}. Check the controller reaches it, or set "
            "archive_url_template (and archive_sha512_url) to a mirror, or use the maven method"
        ) from exc


class _HashingWriter(io.RawIOBase):
    """A binary file that hashes what it writes."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha512()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.digest.update(data)
        return self._handle.write(data)


def check_layout(path: Path, top: str, source: str) -> None:
    """Refuse a tarball that is not ``top/`` with ``top/libs/*.jar`` inside."""
    try:
        with tarfile.open(path, "r:*") as tar:
            names = tar.getnames()
    except (tarfile.TarError, OSError) as exc:
        raise KafkaDistError(f"{source} is not a readable tarball: {exc}") from exc
    outside = [n for n in names if n.rstrip("/") != top and not n.startswith(f"{top}/")]
    jars = [n for n in names if re.fullmatch(rf"{re.escape(top)}/libs/[^/]+\.jar", n)]
    if outside or not jars:
        problem = f"has {outside[0]} outside {top}/" if outside else f"has no {top}/libs/*.jar"
        raise KafkaDistError(
            f"{source} {problem}: it is not a Kafka binary release for Scala {SCALA_VERSION}; "
            f"point archive_url_template at kafka_{SCALA_VERSION}-<version>.tgz"
        )


def ensure_archive_dist(
    version: str,
    cache_dir: Path,
    *,
    url_template: str = DEFAULT_ARCHIVE_URL_TEMPLATE,
    sha512_url: str | None = None,
    fetch: Fetcher | None = None,
) -> KafkaDist:
    """Download the official tarball of ``version``, keep it only if its SHA-512 matches."""
    url, checksum_url = archive_urls(version, url_template, sha512_url)
    fetch = fetch or urllib_fetch
    folder = _kafka_dir(cache_dir)
    path = folder / archive_tarball_name(version)
    with _locked(folder, path.name):
        sha256 = _cached(path)
        if sha256 is not None:
            return KafkaDist(path, dist_name(version), changed=False, sha256=sha256)
        checksum = io.BytesIO()
        _fetch(fetch, checksum_url, checksum, "checksum")
        text = checksum.getvalue().decode("utf-8", errors="replace")
        expected = parse_sha512(text, url.rsplit("/", 1)[-1], source=checksum_url)
        with _temporary_beside(path) as temporary:
            with open(temporary, "wb") as handle:
                writer = _HashingWriter(handle)
                _fetch(fetch, url, writer, "Kafka tarball")  # type: ignore[arg-type]
            actual = writer.digest.hexdigest()
            if actual != expected:
                raise KafkaDistError(
                    f"{url} does not match its checksum {checksum_url}: expected SHA-512 "
                    f"{expected}, got {actual}. The download is corrupt or not that release: "
                    "nothing was cached; retry, or check the mirror"
                )
            check_layout(temporary, dist_name(version), url)
            sha256 = _publish(temporary, path)
    return KafkaDist(path, dist_name(version), changed=True, sha256=sha256)


# -- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice_infra.kafka_dist",
        description="Resolve (or download) the Kafka tarball once into a cache; print it as JSON.",
    )
    methods = parser.add_subparsers(dest="method", required=True)
    maven = methods.add_parser("maven", help="resolve Kafka's jars from a Maven repository")
    archive = methods.add_parser("archive", help="download the official tarball, check SHA-512")
    for sub in (maven, archive):
        sub.add_argument("--version", required=True, help="Kafka version, e.g. 4.1.1")
        sub.add_argument("--cache-dir", type=Path, required=True, help="e.g. /var/cache/sluice")
    maven.add_argument("--repository-url", default=DEFAULT_REPOSITORY_URL)
    archive.add_argument("--url-template", default=DEFAULT_ARCHIVE_URL_TEMPLATE)
    archive.add_argument("--sha512-url", default=None, help="default: the tarball URL + .sha512")
    args = parser.parse_args(argv)
    try:
        if args.method == "maven":
            dist = ensure_maven_dist(
                args.version, args.cache_dir, repository_url=args.repository_url
            )
        else:
            dist = ensure_archive_dist(
                args.version,
                args.cache_dir,
                url_template=args.url_template,
                sha512_url=args.sha512_url,
            )
    except KafkaDistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dist.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
