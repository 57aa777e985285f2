# The work is done on the controller by the action plugin of the same name
# (ansible/plugins/action/sluice_kafka_pki.py over sluice_infra/kafka_pki.py); this file
# documents its arguments for ansible-doc and ansible-lint.

DOCUMENTATION = r"""
---
module: sluice_kafka_pki
short_description: Keep Kafka's CA and per-broker TLS certificates current, on the controller
description:
  - Generates a small CA (C(ca.key) mode 0600 and C(ca.crt), in a 0700 O(directory)) when the
    directory holds neither file. When both exist, the CA from an earlier run or the
    operator's own, they are validated (key matches certificate, C(CA:TRUE), not expired) and
    kept; half a CA, an encrypted, mismatched or expired one fails the task naming the file
    and the fix.
  - Issues each host in O(hosts) an unencrypted PKCS#8 key (C(hosts/<name>.key), 0600) and a
    chain (C(hosts/<name>.crt), the host's certificate then the CA's), the files Kafka reads
    with C(ssl.keystore.type=PEM) and C(ssl.truststore.type=PEM). The subject is
    C(CN=<name>,OU=kafka-broker,O=Sluice), the subject alternative names are the host's
    O(hosts[].dns_names) and O(hosts[].ip_addresses), the extended key usage serverAuth and
    clientAuth (brokers are TLS clients of each other).
  - A host gets a new key and certificate only when it has none, when its certificate is not
    signed by the current CA, does not match its key, names other subject alternative names
    or another subject, has another O(key_type), or expires within O(renew_days). A second run
    changes nothing.
  - A host with O(hosts[].cert) and O(hosts[].key) brings its own certificate; it is validated
    against C(<directory>/ca.crt) (chain, validity, every subject alternative name, key usage,
    subject, PKCS#8 key) and never replaced. When every host brings its own, C(ca.key) is not
    needed.
  - "Every problem fails the task before anything is written. Check mode reports what would
    change and writes nothing. Runs on the controller only; use it with C(run_once) and
    C(delegate_to: localhost). Returns paths, never key material."
options:
  directory:
    description:
      - Absolute controller path of the CA directory. Keep it out of version control, or
        encrypted, since it holds the CA key and every broker key.
    type: path
    required: true
  hosts:
    description:
      - The brokers, one entry each.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - The inventory host name; the certificate's C(CN) and the files' name.
        type: str
        required: true
      dns_names:
        description:
          - DNS subject alternative names, e.g. the host name and its FQDN.
        type: list
        elements: str
        default: []
      ip_addresses:
        description:
          - IP subject alternative names, e.g. the listener address.
        type: list
        elements: str
        default: []
      cert:
        description:
          - Controller path of the host's own certificate (leaf first, then intermediates).
            Give O(hosts[].key) with it.
        type: path
      key:
        description:
          - Controller path of the host's own key, unencrypted PKCS#8 PEM.
        type: path
  days:
    description:
      - Validity of a new host certificate, in days; never beyond the CA's.
    type: int
    default: 825
  renew_days:
    description:
      - A host certificate expiring within this many days is reissued. Less than O(days).
    type: int
    default: 30
  ca_days:
    description:
      - Validity of a new CA, in days. An existing CA is never renewed by this module.
    type: int
    default: 3650
  key_type:
    description:
      - Key of a new CA or host certificate, C(ec) (P-256) or C(rsa) (3072 bits).
    type: str
    choices: [ec, rsa]
    default: ec
author:
  - Sluice maintainers
"""

EXAMPLES = r"""
- name: Keep the Kafka CA and broker certificates current
  sluice_kafka_pki:
    directory: "{{ inventory_dir }}/pki/kafka"
    hosts:
      - name: stream
        dns_names: [stream]
        ip_addresses: [10.77.0.12]
  run_once: true
  delegate_to: localhost

- name: Two brokers, one with a certificate from the company CA
  sluice_kafka_pki:
    directory: /srv/sluice/pki/kafka
    hosts:
      - name: stream
        dns_names: [stream, stream.example.net]
        ip_addresses: [192.0.2.12]
      - name: stream2
        dns_names: [stream2.example.net]
        cert: /srv/sluice/pki/own/stream2.crt
        key: /srv/sluice/pki/own/stream2.key
  run_once: true
  delegate_to: localhost
  register: kafka_pki
"""

RETURN = r"""
ca_created:
  description: Whether the CA was generated (in check mode, would be).
  returned: success
  type: bool
issued:
  description: Hosts that got a new key and certificate (in check mode, would get).
  returned: success
  type: list
  elements: str
  sample: [stream]
reasons:
  description: Per issued host, why its old certificate did not fit.
  returned: success
  type: dict
  sample: {stream: ["its subject alternative names differ"]}
ca_cert:
  description: Controller path of the CA certificate, the brokers' PEM trust store.
  returned: success
  type: str
  sample: /srv/sluice/pki/kafka/ca.crt
certs:
  description: Per host, controller paths of its certificate chain and its key.
  returned: success
  type: dict
  sample: {stream: {cert: /srv/sluice/pki/kafka/hosts/stream.crt,
                    key: /srv/sluice/pki/kafka/hosts/stream.key}}
msg:
  description: What changed, or every problem, one per line.
  returned: always
  type: str
  sample: certificate issued for stream
"""
