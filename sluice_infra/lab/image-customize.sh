#!/bin/sh
# Turns the debootstrap'd tree into a cloud image like Debian's genericcloud one: runs inside
# the image (systemd-nspawn, not booted) at build time. Part of the image recipe: changing
# this file rebuilds the image.
set -eu
mirror="$1"
suite="$2"

cat > /etc/apt/sources.list <<SOURCES
deb ${mirror} ${suite} main
deb ${mirror} ${suite}-updates main
deb ${mirror}-security ${suite}-security main
SOURCES

# cloud-init writes only the .network file for its networkd renderer: networkd must run.
systemctl enable systemd-networkd.service
# Seed from /var/lib/cloud/seed/nocloud in the lab; on Proxmox the NoCloud drive is found too.
cat > /etc/cloud/cloud.cfg.d/90_sluice_datasource.cfg <<'CFG'
datasource_list: [ NoCloud, None ]
CFG

# Every machine gets its own identity on first boot.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -rf /var/lib/cloud/instances /var/lib/cloud/instance

apt-get clean
rm -rf /var/lib/apt/lists/*
