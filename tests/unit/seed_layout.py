"""The lab's seed layout (inventories/lab/hosts.yml) as plain data, shared by unit tests."""

GROUPS = {
    "all": ["db", "app", "stream"],
    "ungrouped": [],
    "citus_coordinator": ["db"],
    "citus_workers": ["db"],
    "kafka": ["stream"],
    "redis_cluster": ["stream"],
    "sluice_api": ["app"],
    "sluice_processor": ["app"],
    "monitoring": ["app"],
}
ADDRESSES = {"db": "10.77.0.10", "app": "10.77.0.11", "stream": "10.77.0.12"}
HOSTVARS = {"stream": {"redis_cluster_instances_per_host": 6}}
