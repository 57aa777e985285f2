"""The local lab: systemd-nspawn machines on a host bridge that stand in for the Proxmox VMs.

Layout of the package, in the order ``sluice-lab up`` uses it:

- :mod:`.spec`     reads the lab's shape from an Ansible inventory (machines, addresses, memory);
- :mod:`.host`     checks the host can run the lab and runs host commands;
- :mod:`.network`  the bridge, forwarding and the NAT table (recognises its own leftovers);
- :mod:`.aptcache` apt-cacher-ng on the bridge address, so redeploys do not download again;
- :mod:`.image`    the debootstrap'd Debian 12 base image, cached by recipe;
- :mod:`.machine`  one machine: writable copy of the image, cloud-init seed, boot, stop;
- :mod:`.lab`      the whole lab: up, down, status;
- :mod:`.cli`      the ``sluice-lab`` command behind the Make targets and molecule's driver.
"""


class LabError(RuntimeError):
    """Something stops the lab; the message says what and what to do about it."""
