"""Shared by the test_pulumi_* modules (no tests of its own): the Pulumi program's modules, a
valid stack config, and a run of the stack under pulumi.runtime.Mocks that records every
resource registration as the engine would receive it (inputs, dependencies, options).

The program lives in pulumi/ and imports its modules by their plain names, as `pulumi up` runs
it; this module puts that folder on sys.path once, and imports them for the tests.
"""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi.runtime.mocks import MockMonitor

import pulumi

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "pulumi"
if str(PROGRAM) not in sys.path:
    sys.path.insert(0, str(PROGRAM))

config = importlib.import_module("config")
config_fields = importlib.import_module("config_fields")
seed = importlib.import_module("seed")
sluice_vm = importlib.import_module("sluice_vm")
stack = importlib.import_module("stack")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0a2V5 ops@test"
TOKEN = "sluice@pve!pulumi=0a1b2c3d-0000-4000-8000-123456789abc"
IMAGE_URL = (
    "https://cloud.debian.org/images/cloud/bookworm/20250210-2019/"
    "debian-12-genericcloud-amd64-20250210-2019.qcow2"
)
ADDRESSES = {"db": "10.20.0.10", "app": "10.20.0.11", "stream": "10.20.0.12"}
VM_IDS = {"db": 4101, "app": 4102, "stream": 4103}
VM_TYPE = "proxmoxve:index/vmLegacy:VmLegacy"
SNIPPET_TYPE = "proxmoxve:index/fileLegacy:FileLegacy"
IMAGE_TYPE = "proxmoxve:download/file:File"

VALID: dict[str, Any] = {
    "proxmox": {"endpoint": "https://pve1.example.net:8006/"},
    "proxmoxApiToken": TOKEN,
    "node": "pve1",
    "source": {"image": {"url": IMAGE_URL, "checksum": "0123456789abcdef" * 8}},
    "network": {
        "subnet": "10.20.0.0/24",
        "gateway": "10.20.0.1",
        "nameservers": ["10.20.0.53", "10.20.0.54"],
        "vlan": 120,
    },
    "sshAuthorizedKeys": [KEY],
    "vms": {role: {"vmId": VM_IDS[role], "address": ADDRESSES[role]} for role in ADDRESSES},
}


#: A change value that deletes the key.
REMOVE = object()


def values(*changes: tuple[str, Any], base: Mapping[str, Any] = VALID) -> dict[str, Any]:
    """A copy of ``base`` with ``(path, value)`` changes; a path is dotted (``vms.db.vcpu``) and a
    value of :data:`REMOVE` deletes the key."""
    result = copy.deepcopy(dict(base))
    for path, value in changes:
        *parents, leaf = path.split(".")
        target = result
        for name in parents:
            target = target.setdefault(name, {})
        if value is REMOVE:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return result


def example_values() -> dict[str, Any]:
    """The sluice:* config of Pulumi.example.yaml, plus the token it must not hold."""
    document = yaml.safe_load((REPO / "Pulumi.example.yaml").read_text())
    found = {
        key.removeprefix("sluice:"): value
        for key, value in document["config"].items()
        if key.startswith("sluice:")
    }
    return {**found, "proxmoxApiToken": TOKEN}


# --- the stack under mocks --------------------------------------------------------------------


@dataclass
class Registration:
    """One resource as the engine receives it."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    dependencies: list[str]
    protect: bool
    delete_before_replace: bool
    ignore_changes: list[str]
    parent: str
    provider: str  # "<provider urn>::<provider id>", empty for components and providers


@dataclass
class StackRun:
    outputs: dict[str, Any]
    registrations: list[Registration] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name: str) -> Registration:
        [found] = [r for r in self.of_type(type_) if r.name == name]
        return found

    def vm(self, role: str) -> Registration:
        return self.one(VM_TYPE, role)

    def snippets_of(self, role: str) -> dict[str, Registration]:
        """{seed kind: snippet} of the VM ``role``."""
        return {kind: self.one(SNIPPET_TYPE, f"{role}-{kind}") for kind in seed.KINDS}


class _Mocks(pulumi.runtime.Mocks):
    """Resources get the provider's id format and echo their inputs as their state."""

    def __init__(self) -> None:
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = dict(args.inputs)
        self.inputs[(args.typ, args.name)] = inputs
        if args.typ == SNIPPET_TYPE:
            source = inputs["sourceRaw"]
            return f"{inputs['datastoreId']}:snippets/{source['fileName']}", inputs
        if args.typ == IMAGE_TYPE:
            return f"{inputs['datastoreId']}:import/{inputs['fileName']}", inputs
        if args.typ == VM_TYPE:
            return str(inputs["vmId"]), inputs
        return f"{args.name}-id", inputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


class _RecordingMonitor(MockMonitor):
    def __init__(self, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.recording_mocks = mocks
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.registrations.append(
            Registration(
                type=request.type,
                name=request.name,
                urn=response.urn,
                inputs=self.recording_mocks.inputs.get((request.type, request.name), {}),
                dependencies=list(request.dependencies),
                protect=bool(request.protect),
                delete_before_replace=bool(request.deleteBeforeReplace),
                ignore_changes=list(request.ignoreChanges),
                parent=request.parent,
                provider=request.provider,
            )
        )
        return response


def prepare_mocks() -> _RecordingMonitor:
    """Install fresh mocks; the returned monitor records what the program registers."""
    mocks = _Mocks()
    monitor = _RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="sluice", stack="test", preview=False, monitor=monitor)
    return monitor


def run_stack(stack_config: Any) -> StackRun:
    """Build the stack for ``stack_config`` under mocks; its resolved outputs and registrations."""
    monitor = prepare_mocks()
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output:
        return pulumi.Output.from_input(stack.build(stack_config)).apply(outputs.update)

    program()
    return StackRun(outputs, monitor.registrations)
