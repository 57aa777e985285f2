"""The whole lab: bring it up (adopting what an earlier run left), take it down, show it."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from sluice_infra import REPO_ROOT
from sluice_infra.cloudinit import HostBootstrap, render
from sluice_infra.lab import LabError, aptcache, image, network
from sluice_infra.lab.host import host_memory_bytes, preflight, run, stop, stop_all
from sluice_infra.lab.machine import STOP_TIMEOUT, Machine, foreign_machines, memory_cap
from sluice_infra.lab.spec import LabSpec

#: Seconds `down` gives the machines to power off before killing them: their disks are removed
#: next, so a clean shutdown buys nothing. (A spread layout's Kafka nodes, all powering off at
#: once, each wait for a controller quorum that is going away: up to their TimeoutStopSec.)
DOWN_TIMEOUT = 20

#: Shared, reproducible and expensive: the base image and the apt cache. Kept outside the
#: clone so new clones and CI runs reuse them.
DEFAULT_CACHE_DIR = Path(os.environ.get("SLUICE_CACHE_DIR", "/var/cache/sluice"))
#: Per clone: machine disks, the lab SSH key, the lab vault password.
DEFAULT_STATE_DIR = REPO_ROOT / ".lab"

BOOT_TIMEOUT = 180.0
CLOUD_INIT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Lab:
    spec: LabSpec
    state_dir: Path = DEFAULT_STATE_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR

    @property
    def machines(self) -> list[Machine]:
        return [Machine(m, self.spec, self.state_dir) for m in self.spec.machines]

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ssh_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    # -- up --------------------------------------------------------------------------------

    def up(self, log=print) -> None:
        """Create or adopt everything; start what is stopped; wait until every machine has
        finished cloud-init and answers SSH. Running it again changes nothing."""
        preflight()
        # refuse what is not the lab's before touching anything
        network.check(self.spec)
        aptcache.check(self.spec, self.cache_dir)
        nameservers = self._nameservers()
        for pid, directory in foreign_machines(self.spec, self.state_dir).items():
            log(f"stopping a lab machine left by another checkout ({directory})")
            stop(pid, timeout=60)
        for line in network.up(self.spec):
            log(line)
        log(aptcache.up(self.spec, self.cache_dir))
        base = image.ensure(self.cache_dir, log)
        self._ensure_ssh_key()
        public_key = self.ssh_key.with_suffix(".pub").read_text().strip()
        caps = self.spec.memory_caps(host_memory_bytes())

        for machine in self.machines:
            if machine.create(base):
                log(f"{machine.name}: created from {base.parent.name}")
            seed = render(
                HostBootstrap(
                    hostname=machine.name,
                    address=f"{machine.spec.address}/{self.spec.subnet.prefixlen}",
                    gateway=str(self.spec.gateway),
                    nameservers=nameservers,
                    admin_user=self.spec.admin_user,
                    ssh_authorized_keys=(public_key,),
                    interface_name="host0",
                    apt_proxy=aptcache.url(self.spec),
                )
            )
            if machine.write_seed(seed) and machine.running():
                log(f"{machine.name}: cloud-init seed changed, restarting")
                machine.stop()
            if not machine.running():
                machine.start(caps[machine.name], log)
                log(
                    f"{machine.name}: booting ({machine.spec.address}, "
                    f"memory cap {caps[machine.name] // 2**20} MiB)"
                )

        for machine in self.machines:
            machine.wait_booted(BOOT_TIMEOUT)
        self._write_ssh_files()
        for machine in self.machines:
            machine.wait_cloud_init(self.ssh_config, CLOUD_INIT_TIMEOUT)
            log(f"{machine.name}: ready, ssh -F {self.ssh_config} {machine.name}")

    def _ensure_ssh_key(self) -> None:
        self.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.ssh_key.exists():
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "sluice-lab",
                    "-f",
                    str(self.ssh_key),
                ]
            )

    def _write_ssh_files(self) -> None:
        """known_hosts from the keys on the machines' disks (no trust on first use), and an
        ssh_config that Ansible, testinfra and people use alike."""
        hosts, config = [], []
        for machine in self.machines:
            key = machine.host_key()
            if key:
                hosts.append(f"{machine.name},{machine.spec.address} {key}")
            config += [
                f"Host {machine.name} {machine.spec.address}",
                f"  HostName {machine.spec.address}",
                f"  User {self.spec.admin_user}",
                f"  IdentityFile {self.ssh_key}",
                "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {self.known_hosts}",
                "  StrictHostKeyChecking yes",
                "  LogLevel ERROR",
                "",
            ]
        self.known_hosts.write_text("\n".join(hosts) + "\n")
        self.ssh_config.write_text("\n".join(config))

    def _nameservers(self) -> tuple[str, ...]:
        """The host's upstream resolvers, as the machines will reach them through NAT."""
        for resolv in (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf")):
            try:
                lines = resolv.read_text().splitlines()
            except OSError:
                continue
            servers = []
            for line in lines:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    address = ipaddress.ip_address(parts[1].split("%")[0])
                    if address.version == 4 and not address.is_loopback:
                        servers.append(str(address))
            if servers:
                return tuple(servers)
        raise LabError(
            "found no IPv4 nameserver in /etc/resolv.conf that the machines could reach "
            "(loopback resolvers are the host's own); add one there"
        )

    # -- down ------------------------------------------------------------------------------

    def _stop_machines(self, timeout: float) -> list[Machine]:
        """Shut every running machine down at once, killing what still runs after ``timeout``
        seconds; the ones that were running."""
        running = {machine: machine.pid() for machine in self.machines}
        running = {machine: pid for machine, pid in running.items() if pid is not None}
        stop_all(running.values(), timeout)
        return list(running)

    def stop(self, log=print) -> None:
        """Stop the machines and keep their disks: `up` starts them again as they were."""
        for machine in self._stop_machines(STOP_TIMEOUT):
            log(f"{machine.name}: stopped")

    def down(self, log=print) -> None:
        """Remove machines, apt cache process, NAT and bridge. Keeps the cached image and the
        apt cache's files (outside the clone) and this clone's SSH key."""
        preflight()
        for pid, directory in foreign_machines(self.spec, self.state_dir).items():
            log(f"stopping a lab machine left by another checkout ({directory})")
            stop(pid, timeout=60)
        stopped = self._stop_machines(DOWN_TIMEOUT)
        for machine in self.machines:
            if machine in stopped or machine.exists() or machine.running():
                machine.destroy()
                log(f"{machine.name}: removed")
        for line in aptcache.down(self.cache_dir) + network.down(self.spec):
            log(line)
        self.known_hosts.unlink(missing_ok=True)
        self.ssh_config.unlink(missing_ok=True)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> str:
        rows = [f"lab {self.spec.inventory} (state {self.state_dir})"]
        net = network.status(self.spec)
        rows.append(f"  bridge     {net['bridge']}")
        rows.append(f"  nat        {net['nat']}")
        rows.append(f"  apt cache  {aptcache.status(self.cache_dir, self.spec)}")
        base = image.path(self.cache_dir)
        rows.append(
            f"  image      {base.parent.name}"
            + ("" if (base.parent / "complete").exists() else " (not built)")
        )
        for machine in self.machines:
            state = "running" if machine.running() else "stopped" if machine.exists() else "absent"
            cap = memory_cap(machine.name) if state == "running" else None
            rows.append(
                f"  {machine.name:<10} {state:<8} {machine.spec.address}"
                + (f"  memory cap {cap // 2**20} MiB" if cap else "")
            )
        return "\n".join(rows)
