# The work is done on the controller by the action plugin of the same name
# (ansible/plugins/action/sluice_kafka_dist.py over sluice_infra/kafka_dist.py); this file
# documents its arguments for ansible-doc and ansible-lint.

DOCUMENTATION = r"""
---
module: sluice_kafka_dist
short_description: Resolve the Kafka tarball once into the controller's cache
description:
  - Produces, on the controller, a tarball whose single top folder is C(kafka_2.13-<version>/)
    with C(libs/*.jar) inside, and returns its path for M(ansible.builtin.copy) and
    M(ansible.builtin.unarchive) to install on the hosts.
  - "C(method=maven): resolves C(org.apache.kafka:kafka_2.13) and C(org.apache.kafka:kafka-tools)
    with their runtime dependencies, plus the log4j2 SLF4J binding Kafka's poms leave out, with
    the controller's C(mvn) (Debian package C(maven)) from O(repository_url). Output:
    C(<cache_dir>/kafka/kafka_2.13-<version>.maven.tar.gz), reproducible; Maven's local
    repository C(<cache_dir>/maven) is kept between runs."
  - "C(method=archive): downloads the official Apache tarball from O(archive_url_template) and
    keeps it as C(<cache_dir>/kafka/kafka_2.13-<version>.tgz) only if it matches its C(.sha512)
    (C(sha512sum) or C(gpg --print-md) format)."
  - A tarball with a matching C(.sha256) sidecar is complete and is neither rebuilt nor
    downloaded again (C(changed=false)), so a second run needs neither Maven nor the network.
  - Runs on the controller only, and also in check mode, because it writes nothing but the
    controller's cache. Use it with C(run_once).
options:
  method:
    description: How to obtain Kafka.
    type: str
    choices: [maven, archive]
    default: maven
  version:
    description: Kafka version, e.g. C(4.1.1).
    type: str
    required: true
  cache_dir:
    description:
      - Controller folder holding C(kafka/) (the tarballs) and C(maven/) (Maven's local
        repository). The controller's user must be able to write it.
    type: path
    required: true
  repository_url:
    description:
      - Maven repository for C(method=maven), e.g. an internal mirror of Maven Central; every
        download, Maven's plugins included, goes to it.
    type: str
    default: https://repo.maven.apache.org/maven2
  archive_url_template:
    description: Tarball URL for C(method=archive); C({version}) is replaced by O(version).
    type: str
    default: https://archive.apache.org/dist/kafka/{version}/kafka_2.13-{version}.tgz
  archive_sha512_url:
    description:
      - URL of the tarball's SHA-512 for C(method=archive); default the tarball URL + C(.sha512).
    type: str
author:
  - Sluice maintainers
"""

EXAMPLES = r"""
- name: Resolve Kafka on the controller
  sluice_kafka_dist:
    version: "{{ kafka_version }}"
    cache_dir: "{{ kafka_dist_cache_dir }}"
  register: kafka_dist
  run_once: true
  delegate_to: localhost

- name: Download the official tarball through a mirror instead
  sluice_kafka_dist:
    method: archive
    version: 4.1.1
    cache_dir: /var/cache/sluice
    archive_url_template: https://mirror.example.org/kafka/{version}/kafka_2.13-{version}.tgz
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: The tarball on the controller.
  returned: success
  type: str
  sample: /var/cache/sluice/kafka/kafka_2.13-4.1.1.maven.tar.gz
dist_name:
  description: The tarball's single top folder (strip it when unpacking).
  returned: success
  type: str
  sample: kafka_2.13-4.1.1
sha256:
  description:
    - SHA-256 of the tarball, e.g. to compare with M(ansible.builtin.stat)'s checksum on a host
      (C(checksum_algorithm=sha256)).
  returned: success
  type: str
  sample: d94ac0fbc4d1d7907f4d3d57899d970ef2deac562b5ed93d11a7b6f72890fdfc
changed:
  description: Whether the tarball was built or downloaded now, rather than found in the cache.
  returned: always
  type: bool
msg:
  description: The tarball and whether it was resolved or cached; on failure, what to do.
  returned: always
  type: str
"""
