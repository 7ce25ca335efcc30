# Two commands do all the set-up on a fresh machine (Python 3.11+, Java 17, Maven, Rust):
#   make run    virtualenv, install, fetch Kafka, then `sluice up`
#   make test   the same set-up, lint, then the whole suite on a real Kafka broker

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
KAFKA_JARS := $(VENV)/.kafka-jars
export CHROMIUM ?= /usr/bin/chromium
export SLUICE_API_KEYS ?= dev_key_123:dev
# Development: webhooks may reach receivers on this machine (production allows public addresses only).
export SLUICE_WEBHOOK_PRIVATE_NETWORKS ?= 127.0.0.0/8

.PHONY: run test lint unit integration docs bench-ingest bench-pipeline bench-delivery bench-analytics bench-tenants bench-compare clean

run: $(INSTALLED) $(KAFKA_JARS)
	@test -s var/token_secret || (mkdir -p var && umask 077 && $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))' > var/token_secret)
	SLUICE_TOKEN_SECRET="$${SLUICE_TOKEN_SECRET:-$$(cat var/token_secret)}" $(BIN)/sluice up

test: $(INSTALLED) $(KAFKA_JARS) $(CHROMIUM) lint
	$(BIN)/pytest

unit: $(INSTALLED)
	$(BIN)/pytest -m "not integration"

integration: $(INSTALLED) $(KAFKA_JARS) $(CHROMIUM)
	$(BIN)/pytest -m integration

# Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS) and two producer processes (one per
# spare core; set SLUICE_PRODUCER_PROCESSES); prints events/s, p50/p99 and the bare-producer ceilings.
bench-ingest: $(INSTALLED) $(KAFKA_JARS)
	SLUICE_PRODUCER_PROCESSES=$${SLUICE_PRODUCER_PROCESSES:-2} $(BIN)/python -m bench ingest --connections 16

# Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS), pre-loads 100,000 orders, then one worker
# process: prints its events/s, then HTTP-accept-to-effect latency p50/p99 at a steady 1,000 events/s
# (single POSTs) and 10,000 events/s (batches of 10 usage events).
bench-pipeline: $(INSTALLED) $(KAFKA_JARS)
	$(BIN)/python -m bench pipeline

# Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS), a producer and a webhook dispatcher: prints
# SSE fan-out (10 streams x 20,000 effects) and webhook deliveries per second to a local receiver.
bench-delivery: $(INSTALLED) $(KAFKA_JARS)
	$(BIN)/python -m bench delivery --events 20000 --subscribers 10

# Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS): one worker over 50,000 pre-loaded orders with no
# windowed table, then with three (events/s); then point and top query p50/p99 on a table of 1,000,000 windows.
bench-analytics: $(INSTALLED) $(KAFKA_JARS)
	$(BIN)/python -m bench analytics --events 50000

# The settings table of docs/operations.md, written from the settings' own doc strings (a test checks it).
docs: $(INSTALLED)
	$(BIN)/python -c 'import pathlib; from app.settings import markdown_table; \
	p = pathlib.Path("docs/operations.md"); s = p.read_text(); \
	a, b = "<!-- settings:begin -->\n", "\n<!-- settings:end -->"; \
	p.write_text(s[: s.index(a) + len(a)] + markdown_table() + s[s.index(b) :])'

# Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS) and a producer: tenant B's request p99 alone and while
# tenant A sends at ten times its rate limit, alternating rounds (the target: B's p99 rises at most 20%).
bench-tenants: $(INSTALLED) $(KAFKA_JARS)
	$(BIN)/python -m bench tenants --rate 100 --seconds 10 --rounds 3

# Starts its own broker (unless KAFKA_BOOTSTRAP_SERVERS): the same 100,000 events through one Sluice worker and one
# Quix Streams application (its own virtualenv, var/bench/quix-venv, made once), 3 runs each, alternating; prints
# every run's events/s and CPU per event, the medians and their ratio; fails if a side's effects are wrong.
bench-compare: $(INSTALLED) $(KAFKA_JARS)
	$(BIN)/python -m bench compare --runs 3

lint: $(INSTALLED)
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy

# The compiled core (app/native, Rust): built once, and again when its sources change. rustup puts
# cargo in ~/.cargo/bin, which a fresh shell's PATH may not hold yet.
NATIVE := app/native/_core.so
CARGO ?= $(shell command -v cargo || { test -x $(HOME)/.cargo/bin/cargo && echo $(HOME)/.cargo/bin/cargo; })
run test unit integration bench-ingest bench-pipeline bench-analytics bench-compare bench-delivery bench-tenants: $(NATIVE)
$(NATIVE): app/native/Cargo.toml app/native/Cargo.lock $(wildcard app/native/src/*.rs)
	@test -n "$(CARGO)" || { echo "install Rust with https://rustup.rs (cargo) to build the compiled core"; exit 1; }
	PYO3_PYTHON=$(PYTHON) CARGO_TARGET_DIR=var/native-target $(CARGO) build --quiet --release --locked --manifest-path app/native/Cargo.toml
	cp var/native-target/release/lib_core.so $@.tmp && mv $@.tmp $@

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The console's browser test (tests/console) drives Debian's Chromium; installed here when absent and apt can.
$(CHROMIUM):
	@(command -v apt-get >/dev/null && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || echo "tests/console needs Chromium at $@: install Debian's chromium package (apt-get install chromium)"

# Kafka's jars come from Maven Central once, into ~/.cache/sluice/kafka; later starts need no network.
$(KAFKA_JARS): $(INSTALLED)
	$(BIN)/sluice kafka --fetch-only
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
