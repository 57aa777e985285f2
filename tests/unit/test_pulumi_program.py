"""The Pulumi program under pulumi.runtime.Mocks: the VMs the provider would be asked for (specs,
disks, CPU, memory, boot order, protection), their cloud-init snippets (the lab's own rendering,
uploaded before the VMs), the network and the outputs the inventory is rendered from."""

from __future__ import annotations

import json
import runpy

import pytest
import yaml
from test_pulumi_helpers import (
    ADDRESSES,
    IMAGE_TYPE,
    KEY,
    PROGRAM,
    REMOVE,
    TOKEN,
    VM_IDS,
    VM_TYPE,
    config,
    prepare_mocks,
    run_stack,
    seed,
    sluice_vm,
    values,
)

import pulumi
from sluice_infra.cloudinit import HostBootstrap, render

STUDY = {"db": (8, 32), "app": (12, 24), "stream": (6, 16)}
#: Seed file -> the VM's initialization input that references its snippet.
FILE_ID_INPUTS = {
    "user-data": "userDataFileId",
    "network-config": "networkDataFileId",
    "meta-data": "metaDataFileId",
    "vendor-data": "vendorDataFileId",
}


@pytest.fixture(scope="module")
def seed_run():
    return run_stack(config.load(values()))


def test_three_vms_with_the_studys_cpu_memory_and_ids(seed_run):
    for role, (vcpu, memory_gb) in STUDY.items():
        vm = seed_run.vm(role).inputs
        assert vm["vmId"] == VM_IDS[role]
        assert vm["nodeName"] == "pve1"
        cpu = vm["cpu"]
        assert cpu["type"] == "host" and cpu["numa"] is True
        assert cpu["cores"] * cpu["sockets"] == vcpu
        assert vm["memory"] == {"dedicated": memory_gb * 1024, "floating": 0}  # no ballooning
        assert vm["scsiHardware"] == "virtio-scsi-single"
        assert vm["bootOrders"] == ["scsi0"]
    assert len(seed_run.of_type("proxmoxve:index/vmLegacy:VmLegacy")) == 3


def test_os_and_data_disks_use_iothreads_discard_and_ssd_and_the_data_disk_has_a_serial(seed_run):
    sizes = {"db": 500, "app": 100, "stream": 1000}
    for role, data_gb in sizes.items():
        os_disk, data_disk = seed_run.vm(role).inputs["disks"]
        assert os_disk["interface"] == "scsi0" and os_disk["size"] == 32
        assert data_disk["interface"] == "scsi1" and data_disk["size"] == data_gb
        assert data_disk["serial"] == sluice_vm.DATA_DISK_SERIAL == "sluice-data"
        assert "serial" not in os_disk
        for disk in (os_disk, data_disk):
            assert (disk["iothread"], disk["discard"], disk["ssd"]) == (True, "on", True)
            assert disk["datastoreId"] == "local-lvm"


def test_the_os_disk_is_imported_from_the_downloaded_image(seed_run):
    [image] = seed_run.of_type(IMAGE_TYPE)
    assert image.inputs["contentType"] == "import"
    assert image.inputs["url"].endswith("debian-12-genericcloud-amd64-20250210-2019.qcow2")
    assert image.inputs["overwrite"] is False
    assert image.delete_before_replace  # a new download of the same file name replaces it
    assert image.inputs["checksum"] == "0123456789abcdef" * 8
    assert image.inputs["checksumAlgorithm"] == "sha512"
    for role in STUDY:
        vm = seed_run.vm(role)
        assert vm.inputs["disks"][0]["importFrom"] == (
            "local:import/debian-12-genericcloud-amd64-20250210-2019.qcow2"
        )
        assert image.urn in vm.dependencies
        assert "clone" not in vm.inputs


def test_guest_agent_with_trim_and_boot_order_db_stream_app(seed_run):
    orders = {}
    for role in STUDY:
        vm = seed_run.vm(role).inputs
        assert vm["agent"]["enabled"] is True and vm["agent"]["trim"] is True
        assert vm["onBoot"] is True and vm["started"] is True
        orders[role] = vm["startup"]["order"]
    assert sorted(orders, key=orders.get) == ["db", "stream", "app"]


def test_stateful_vms_are_protected_in_proxmox_and_in_pulumi(seed_run):
    for role, protected in {"db": True, "stream": True, "app": False}.items():
        vm = seed_run.vm(role)
        assert vm.inputs["protection"] is protected
        assert vm.protect is protected


def test_the_providers_perpetual_diffs_are_ignored_and_updates_never_reboot(seed_run):
    for role in STUDY:
        vm = seed_run.vm(role)
        assert set(vm.ignore_changes) >= {"disks[0].speed", "disks[1].speed", "clone"}
        assert vm.inputs["rebootAfterUpdate"] is False
        assert vm.inputs["migrate"] is True


def test_the_nic_joins_the_bridge_with_the_vlan_and_the_seeds_mac(seed_run):
    for role in STUDY:
        [nic] = seed_run.vm(role).inputs["networkDevices"]
        assert nic["bridge"] == "vmbr0" and nic["vlanId"] == 120 and nic["model"] == "virtio"
        assert nic["macAddress"] == config.derived_mac(VM_IDS[role]).upper()
        network = yaml.safe_load(
            seed_run.snippets_of(role)["network-config"].inputs["sourceRaw"]["data"]
        )
        assert network["ethernets"]["eth0"]["match"]["macaddress"] == nic["macAddress"].lower()


def lab_bootstrap(role: str) -> HostBootstrap:
    """What the lab would render for this VM's settings, built here from the raw values rather
    than through the program's config module."""
    return HostBootstrap(
        hostname=role,
        address=f"{ADDRESSES[role]}/24",
        gateway="10.20.0.1",
        nameservers=("10.20.0.53", "10.20.0.54"),
        admin_user="ops",
        ssh_authorized_keys=(KEY,),
        interface_name="eth0",
        interface_mac=config.derived_mac(VM_IDS[role]),
    )


def test_the_uploaded_seed_is_what_the_lab_renders_for_the_same_input(seed_run):
    for role in STUDY:
        lab = render(lab_bootstrap(role))
        snippets = seed_run.snippets_of(role)
        uploaded = {kind: snippets[kind].inputs["sourceRaw"]["data"] for kind in lab.files()}
        assert uploaded == lab.files()
        data = yaml.safe_load(uploaded["user-data"])
        assert data["hostname"] == role
        assert data["users"][0]["ssh_authorized_keys"] == [KEY]
        assert yaml.safe_load(uploaded["network-config"])["ethernets"]["eth0"]["addresses"] == [
            f"{ADDRESSES[role]}/24"
        ]


def test_vendor_data_installs_and_starts_the_guest_agent(seed_run):
    data = seed_run.snippets_of("db")["vendor-data"].inputs["sourceRaw"]["data"]
    assert data.startswith("#cloud-config\n")
    parsed = yaml.safe_load(data)
    assert parsed["packages"] == ["qemu-guest-agent"]
    assert ["systemctl", "start", "qemu-guest-agent"] in parsed["runcmd"]


def test_snippets_exist_on_the_vms_node_before_the_vm_that_uses_them(seed_run):
    for role in STUDY:
        vm = seed_run.vm(role)
        snippets = seed_run.snippets_of(role)
        assert set(snippets) == set(seed.KINDS)
        initialization = vm.inputs["initialization"]
        assert initialization["type"] == "nocloud"
        for kind, snippet in snippets.items():
            assert snippet.urn in vm.dependencies, f"{role} VM does not wait for its {kind}"
            assert snippet.inputs["contentType"] == "snippets"
            assert snippet.inputs["nodeName"] == vm.inputs["nodeName"]
            file_name = snippet.inputs["sourceRaw"]["fileName"]
            assert file_name.startswith(f"sluice-{role}-{kind}-") and file_name.endswith(".yaml")
            assert initialization[FILE_ID_INPUTS[kind]] == f"local:snippets/{file_name}"


def test_a_changed_seed_is_a_new_snippet_name():
    first = seed.seed_files(config.load(values()), config.load(values()).vm("db"))
    changed = config.load(values(("sshAuthorizedKeys", [KEY, KEY.replace("ops@test", "x@y")])))
    second = seed.seed_files(changed, changed.vm("db"))
    names = {f.kind: f.file_name for f in first}, {f.kind: f.file_name for f in second}
    assert names[0]["user-data"] != names[1]["user-data"]
    assert names[0]["vendor-data"] == names[1]["vendor-data"]


def test_outputs_carry_each_hosts_name_address_role_and_size(seed_run):
    outputs = seed_run.outputs
    assert outputs["layout"] == "seed" and outputs["adminUser"] == "ops"
    assert sorted(outputs["hosts"]) == sorted(STUDY)
    for role, (vcpu, memory_gb) in STUDY.items():
        host = outputs["hosts"][role]
        assert host["role"] == role and host["name"] == role
        assert host["address"] == ADDRESSES[role]
        assert (host["vcpu"], host["memoryGb"]) == (vcpu, memory_gb)
        assert host["vmId"] == VM_IDS[role] and host["node"] == "pve1"
    assert TOKEN not in json.dumps(outputs)


def test_a_template_source_is_cloned_with_retries_and_nothing_is_downloaded():
    run = run_stack(config.load(values(("source", {"template": {"vmId": 9000, "retries": 5}}))))
    assert run.of_type(IMAGE_TYPE) == []
    for role in STUDY:
        vm = run.vm(role).inputs
        assert vm["clone"] == {
            "vmId": 9000,
            "nodeName": "pve1",
            "full": True,
            "retries": 5,
            "datastoreId": "local-lvm",
        }
        assert vm["vmId"] == VM_IDS[role]
        assert "importFrom" not in vm["disks"][0]


def test_vms_spread_over_nodes_get_the_image_and_their_snippets_on_their_node():
    run = run_stack(config.load(values(("vms.app.node", "pve2"), ("vms.stream.node", "pve3"))))
    images = {image.inputs["nodeName"]: image for image in run.of_type(IMAGE_TYPE)}
    assert sorted(images) == ["pve1", "pve2", "pve3"]
    for role, node in {"db": "pve1", "app": "pve2", "stream": "pve3"}.items():
        vm = run.vm(role)
        assert vm.inputs["nodeName"] == node
        assert images[node].urn in vm.dependencies
        assert {s.inputs["nodeName"] for s in run.snippets_of(role).values()} == {node}
        assert run.outputs["hosts"][role]["node"] == node


def test_a_created_bridge_exists_on_every_node_before_the_vms():
    raw = values(
        ("network.createBridge", True),
        ("network.bridgePorts", ["eno2"]),
        ("network.bridge", "vmbr7"),
        ("vms.app.node", "pve2"),
    )
    run = run_stack(config.load(raw))
    bridges = run.of_type("proxmoxve:network/linux/bridge:Bridge")
    assert sorted(b.inputs["nodeName"] for b in bridges) == ["pve1", "pve2"]
    for bridge in bridges:
        assert bridge.inputs["name"] == "vmbr7" and bridge.inputs["ports"] == ["eno2"]
        assert bridge.inputs["vlanAware"] is True  # the VMs' NIC is tagged
    for role in STUDY:
        assert {b.urn for b in bridges} <= set(run.vm(role).dependencies)


def test_an_existing_bridge_creates_no_network_resources(seed_run):
    assert seed_run.of_type("proxmoxve:network/linux/bridge:Bridge") == []
    assert not [r for r in seed_run.registrations if r.type.startswith("proxmoxve:sdn")]


def test_sdn_mode_builds_zone_vnet_subnet_applies_them_then_the_vms():
    raw = values(
        ("network.mode", "sdn"),
        ("network.vlan", None),
        ("network.sdn", {"zone": "sluice", "vnet": "vnsluice"}),
    )
    del raw["network"]["vlan"]
    run = run_stack(config.load(raw))
    [zone] = run.of_type("proxmoxve:sdn/zone/simple:Simple")
    [vnet] = run.of_type("proxmoxve:sdn/vnet:Vnet")
    [subnet] = run.of_type("proxmoxve:sdn/subnet:Subnet")
    [applier] = run.of_type("proxmoxve:sdn/applier:Applier")
    assert zone.inputs["resourceId"] == "sluice" and zone.inputs["nodes"] == ["pve1"]
    assert vnet.inputs["resourceId"] == "vnsluice" and vnet.inputs["zone"] == "sluice"
    assert subnet.inputs["cidr"] == "10.20.0.0/24" and subnet.inputs["gateway"] == "10.20.0.1"
    assert subnet.inputs["snat"] is True
    assert {zone.urn, vnet.urn, subnet.urn} <= set(applier.dependencies)
    for role in STUDY:
        vm = run.vm(role)
        assert applier.urn in vm.dependencies
        [nic] = vm.inputs["networkDevices"]
        assert nic["bridge"] == "vnsluice" and "vlanId" not in nic


def test_every_resource_uses_the_stacks_provider_with_its_endpoint(seed_run):
    [provider] = seed_run.of_type("pulumi:providers:proxmoxve")
    assert provider.inputs["endpoint"] == "https://pve1.example.net:8006/"
    assert json.loads(provider.inputs["ssh"])["username"] == "root"
    resources = [r for r in seed_run.registrations if r.type.startswith("proxmoxve:")]
    assert len(resources) == 1 + 3 * (1 + len(seed.KINDS))  # the image, 3 VMs with 4 snippets
    for resource in resources:
        assert resource.provider.startswith(provider.urn + "::"), resource.name


def test_an_unverified_image_is_downloaded_with_a_warning(caplog):
    run = run_stack(config.load(values(("source.image.checksum", REMOVE))))
    [image] = run.of_type(IMAGE_TYPE)
    assert "checksum" not in image.inputs
    assert "sluice:source.image.checksum is not set" in caplog.text


# -- the entry point `pulumi up` runs -----------------------------------------------------------


@pytest.fixture
def engine_config():
    """The stack config as the engine hands it to the program (JSON text for objects)."""

    def apply(raw: dict) -> None:
        encoded = {
            f"sluice:{key}": value if isinstance(value, str) else json.dumps(value)
            for key, value in raw.items()
        }
        pulumi.runtime.set_all_config(encoded, ["sluice:proxmoxApiToken"])

    yield apply
    pulumi.runtime.set_all_config({}, [])


def run_entry_point() -> list:
    """Run pulumi/__main__.py under mocks, as `pulumi up` runs the program folder."""

    def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__main__")

    monitor = prepare_mocks()
    pulumi.runtime.test(program)()
    return monitor.registrations


def test_the_entry_point_builds_the_stack_from_the_engines_config(engine_config):
    engine_config(values())
    registrations = run_entry_point()
    assert sorted(r.name for r in registrations if r.type == VM_TYPE) == ["app", "db", "stream"]


def test_the_entry_point_reports_config_problems_as_one_error_without_a_traceback(engine_config):
    engine_config(values(("vms.db.vcpu", 2), ("proxmox", {})))
    with pytest.raises(pulumi.RunError) as info:
        run_entry_point()
    message = str(info.value)
    assert "sluice:vms.db.vcpu is 2, below the minimum 8" in message
    assert "sluice:proxmox.endpoint is not set" in message
