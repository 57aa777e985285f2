# Sluice: the two commands are `make lab` (deploy the local lab) and `make test` (everything
# but benchmarks). Run as root on Debian 12. `make help` lists the rest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

INVENTORY ?= inventories/lab
PYTHON ?= python3
VENV := $(CURDIR)/.venv
LAB_STATE := $(CURDIR)/.lab
export SLUICE_CACHE_DIR ?= /var/cache/sluice

# Host packages the lab needs (Debian 12).
HOST_PACKAGES := systemd-container debootstrap nftables apt-cacher-ng iproute2 \
	openssh-client python3-venv git curl ca-certificates redis-server lua5.1 \
	maven openjdk-17-jre-headless postgresql-15 postgresql-15-partman golang-go
# Installed for the tests and checks only: their services must not run on the host.
HOST_SERVICES_OFF := apt-cacher-ng redis-server postgresql
# Keeps Debian's postgresql-15 from creating (and starting) a default cluster: the app's unit
# tests run a throwaway server of their own (app/tests/unit/pg_server.py).
PG_NO_MAIN_CLUSTER := /etc/postgresql-common/createcluster.d/sluice-no-main-cluster.conf

export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible/ansible.cfg
# Lab connection settings: the lab writes this ssh_config (key, user, pinned host keys).
export ANSIBLE_SSH_COMMON_ARGS := -F $(LAB_STATE)/ssh/config
export ANSIBLE_VAULT_PASSWORD_FILE := $(LAB_STATE)/vault-pass
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_CACHE_DIR := $(SLUICE_CACHE_DIR)/pip

LAB := sluice-lab --cache-dir $(SLUICE_CACHE_DIR) --state-dir $(LAB_STATE)
# The load generator's HTTP driver (loadgen/, Go, standard library only), built with Debian's Go.
GO ?= /usr/bin/go
GOFMT ?= /usr/bin/gofmt
LOADGEN_DRIVER := $(VENV)/bin/sluice-loadgen-driver

.PHONY: bench bench-deps bench-pipeline bench-redis bench-kafka bench-postgresql soak demo docs help inventory lab loadgen host-deps venv lab-up lab-stop lab-down lab-status lab-vault deploy verify \
	summary lint test test-unit test-unit-quick test-fast test-role test-spread test-molecule test-system

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

lab: host-deps lab-up deploy verify summary demo ## Install host needs, boot the lab, deploy site.yml, verify, push events

host-deps: ## Install the host's apt packages and the .venv (idempotent)
	@[ "$$(id -u)" = 0 ] || { echo "make host-deps: run as root (it installs packages)"; exit 1; }
	@missing=$$(for p in $(HOST_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ ! -e $(PG_NO_MAIN_CLUSTER) ]; then \
			mkdir -p $(dir $(PG_NO_MAIN_CLUSTER)); \
			echo "create_main_cluster = false  # Sluice: the tests run their own server" \
				> $(PG_NO_MAIN_CLUSTER); \
		fi; \
		echo "host-deps: installing $$missing"; \
		apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@for s in $(HOST_SERVICES_OFF); do \
		if [ -d /run/systemd/system ] && systemctl -q is-enabled $$s 2>/dev/null; then \
			echo "host-deps: disabling the host's $$s (the lab and the tests run their own)"; \
			systemctl disable --now $$s; \
		fi; \
	done
	@$(MAKE) --no-print-directory venv

venv: $(VENV)/.installed ## The controller's Python tooling (requirements.txt + sluice_infra)

$(VENV)/.installed: requirements.txt pyproject.toml app/pyproject.toml
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	$(VENV)/bin/pip install -q -e 'app[candidates,test]'
	@touch $@

loadgen: venv $(LOADGEN_DRIVER) ## Build sluice-loadgen's HTTP driver (Go) into the venv

$(LOADGEN_DRIVER): loadgen/go.mod $(wildcard loadgen/*.go)
	cd loadgen && $(GO) build -trimpath -o $@ .

lab-up: venv ## Create or adopt the lab machines and start them
	$(LAB) -i $(INVENTORY) up

lab-stop: venv ## Stop the machines, keep their disks (lab-up brings them back)
	$(LAB) -i $(INVENTORY) stop

lab-down: venv ## Remove machines, bridge, NAT rules and the apt cache process
	$(LAB) -i $(INVENTORY) down

lab-status: venv ## Show what runs
	@$(LAB) -i $(INVENTORY) status

lab-vault: venv ## Create the lab vaults (per clone, random secrets) or add missing keys
	@for inv in inventories/lab inventories/lab-spread; do \
		python -m sluice_infra.secrets ensure --inventory $$inv --password-file $(LAB_STATE)/vault-pass; \
	done

deploy: lab-vault ## ansible-playbook site.yml on INVENTORY (default: the lab)
	ansible-playbook -i $(INVENTORY) ansible/site.yml

verify: venv ## testinfra against INVENTORY's hosts
	pytest -q tests/testinfra --hosts='ansible://all' --ansible-inventory=$(INVENTORY)

demo: venv ## Push events through HAProxy; show them in PostgreSQL and the Redis counters
	python -m sluice_infra.lab.demo -i $(INVENTORY)

summary: venv
	@python -m sluice_infra.summary -i $(INVENTORY) --state-dir $(LAB_STATE) --cache-dir $(SLUICE_CACHE_DIR)

inventory: venv ## Render inventories/proxmox/hosts.yml from `pulumi stack output --json` (PULUMI_STACK=<stack>)
	@command -v pulumi >/dev/null || { echo "make inventory: the pulumi CLI is not on PATH. Install it \
	(https://www.pulumi.com/docs/install/), then 'pulumi login' and 'pulumi stack select <stack>', \
	or pass PULUMI_STACK=<stack>"; exit 1; }
	pulumi stack output --json $${PULUMI_STACK:+--stack "$$PULUMI_STACK"} \
		| python -m sluice_infra.pulumi_inventory --from-json - --out inventories/proxmox/hosts.yml \
			--stack "$${PULUMI_STACK:-$$(pulumi stack --show-name 2>/dev/null)}"

lint: venv ## ruff, yamllint, ansible-lint (production profile), gofmt and go vet (loadgen/)
	ruff check .
	ruff format --check .
	yamllint -s .
	env -u ANSIBLE_VAULT_PASSWORD_FILE ansible-lint -q
	python -m sluice_infra.docs --check
	@unformatted=$$($(GOFMT) -l loadgen); [ -z "$$unformatted" ] || { echo "gofmt -w $$unformatted"; exit 1; }
	cd loadgen && $(GO) vet ./...

docs: venv ## Regenerate docs/variables.md from the roles' defaults comments
	python -m sluice_infra.docs

test-unit: venv ## Unit tests: no machines (the ops tooling, the service in app/, the load driver)
	pytest -q $(PYTEST_TIMING) tests/unit
	cd app && pytest -q $(PYTEST_TIMING) tests/unit
	cd loadgen && $(GO) test ./...

test-unit-quick: venv ## Unit tests without those that start Ansible or PostgreSQL (the quick loop)
	pytest -q -m 'not ansible' tests/unit
	cd app && pytest -q -m 'not postgres' tests/unit

test-fast: lint test-unit ## Lint and unit tests: everything that needs no lab machine

test-role: host-deps lab-vault ## One role's molecule scenario (ROLE=kafka|redis_cluster|postgresql|common|sluice)
	@[ -n "$(ROLE)" ] || { echo "make test-role: name the scenario, e.g. ROLE=kafka ($$(ls molecule | grep -v resources | tr '\n' ' '))"; exit 2; }
	molecule test -s $(ROLE)

test-molecule: host-deps lab-vault ## Every molecule scenario, one after another (each converges its own lab)
	molecule test --all

test-spread: host-deps lab-vault ## The spread layout once: site.yml, idempotence, every testinfra check (molecule sluice)
	molecule test -s sluice

test-system: host-deps lab-vault loadgen ## The seed layout once: lab, site.yml, idempotence, check mode, testinfra, faults, service, lab down
	pytest -v $(PYTEST_TIMING) $(if $(SYSTEM_MARKS),-m "$(SYSTEM_MARKS)") tests/system

# `make test`: lint and unit tests beside the spread layout converged once (molecule: the
# converge waits on the machines often enough to leave the unit tests a share of the cores),
# then the seed layout converged once (system tests, without the idempotence run and testinfra
# checks the spread layout has just passed: marker layout_repeat). Each phase is timed, Ansible records
# every task's duration (junit callback), and the report at the end shows where the time went,
# whether the run passed or not.
TEST_RECORD := $(LAB_STATE)/test-run
PHASE := python -m sluice_infra.phases --record $(TEST_RECORD)/phases.tsv
PYTEST_TIMING := --durations=30 --durations-min=1

test: host-deps lab-vault ## Everything but benchmarks (what CI runs)
	@rm -rf $(TEST_RECORD) && mkdir -p $(TEST_RECORD)/junit
	@export ANSIBLE_CALLBACKS_ENABLED=junit JUNIT_OUTPUT_DIR=$(TEST_RECORD)/junit JUNIT_HIDE_TASK_ARGUMENTS=true; \
	trap '$(PHASE) report --junit-dir $(TEST_RECORD)/junit' EXIT; \
	$(PHASE) run "spread layout (molecule sluice) | lint and unit tests" -- \
		$(MAKE) --no-print-directory -j2 --output-sync=target test-spread test-fast && \
	$(PHASE) run "seed layout: system tests" -- \
		$(MAKE) --no-print-directory test-system SYSTEM_MARKS="not layout_repeat"

bench: bench-redis bench-kafka bench-postgresql bench-pipeline ## Benchmarks against the running lab; reports in docs/bench/

bench-deps: venv ## matplotlib into the venv (the pipeline bench's chart)
	pip install -q -r requirements-bench.txt

bench-pipeline: bench-deps loadgen ## sluice-loadgen steps (single, batch, a 2x spike), accounting, CPU per event -> docs/bench/pipeline.*
	cd tests/load && python bench_pipeline.py -i $(abspath $(INVENTORY)) --state-dir $(LAB_STATE)

soak: bench-deps loadgen ## Steady load for HOURS hours (RATE events/s, 3000), accounting, drift -> docs/bench/soak.*
	@[ -n "$(HOURS)" ] || { echo "make soak: say how long, e.g. HOURS=2 (and RATE=<events/s>, default 3000)"; exit 2; }
	cd tests/load && python bench_pipeline.py -i $(abspath $(INVENTORY)) --state-dir $(LAB_STATE) \
		--soak-hours $(HOURS) --soak-rate $(or $(RATE),3000)

bench-redis: venv ## FCALL aggregation throughput on the lab's Redis Cluster -> docs/bench/
	python tests/load/bench_redis_functions.py -i $(INVENTORY)

bench-kafka: venv ## kafka-producer-perf-test over SASL_SSL, acks=all, 500 B records -> docs/bench/
	python tests/load/bench_kafka_producer.py -i $(INVENTORY)

bench-postgresql: venv ## 500 B JSONB events into the partitioned table: COPY vs multi-row INSERT -> docs/bench/
	python tests/load/bench_pg_ingest.py -i $(INVENTORY)
