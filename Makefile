# The two commands: `make run` starts the whole stack, `make test` runs the suite.
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
PYTHON ?= python3
PORT   ?= 8000
FLOWER_PORT ?= 5555
export PORT
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test test-fast test-rabbitmq test-pgbouncer services browser haproxy pgbouncer venv venv-run redis-free lint format migrate bench clean

$(BIN)/python:
	@echo "==> creating the virtualenv $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip

# `make run` installs what running needs; `make test` adds the test tools.
$(RUN_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "==> installing the orchestrator and what it needs to run (the first time: a minute or two)"
	$(BIN)/python -m pip install --progress-bar off --disable-pip-version-check -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "==> installing the orchestrator with its test tools (the first time: a minute or two)"
	$(BIN)/python -m pip install --progress-bar off --disable-pip-version-check -e '.[test]'
	touch $(TEST_STAMP) $(RUN_STAMP)

venv-run: $(RUN_STAMP)
venv: $(TEST_STAMP)

# Starts local PostgreSQL and Redis when they are not running (as on the dev machines).
services:
	@pg_isready -q -h 127.0.0.1 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; sleep 1; done; echo "PostgreSQL or Redis did not start" >&2; exit 1

migrate: venv-run
	@echo "==> creating and migrating the database"
	$(BIN)/orchestrator db create
	$(BIN)/alembic upgrade head

# A Redis db index that a test run has claimed is the test run's (it flushes it at the end).
redis-free:
	@redis-cli -u "$${REDIS_URL:-redis://localhost:6379/0}" exists orchestrator-test-run | grep -qx 0 || \
	  { echo "REDIS_URL names a Redis db index that a test run is using; pick another index" >&2; exit 1; }

run: venv-run services redis-free migrate
	@echo "==> starting the API, WebSocket gateway, worker, webhooks worker, beat and Flower (Ctrl-C stops them all)"
	@$(BIN)/python -m shared.announce http://localhost:$(PORT) $(FLOWER_PORT) &
	$(BIN)/honcho start --port $(PORT) web gateway worker webhooks beat flower

test: venv services browser haproxy pgbouncer
	$(BIN)/pytest $(PYTEST_ARGS)

# The inner loop: everything but the tests marked process, chaos or browser (pyproject.toml).
test-fast: venv services
	$(BIN)/pytest -m "not process and not chaos and not browser" $(PYTEST_ARGS)

# The engine and metrics tests with RabbitMQ as Celery's broker (CELERY_BROKER_URL), on a
# vhost of this run's own, removed after; Redis still carries events, limits and leases.
RABBITMQ_TESTS ?= tests/worker/test_engine.py tests/api/test_metrics.py
test-rabbitmq: venv services
	@vhost=orch_test_$$$$; \
	rabbitmqctl -q add_vhost $$vhost && \
	rabbitmqctl -q set_permissions -p $$vhost guest '.*' '.*' '.*' && \
	TEST_CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/$$vhost \
		$(BIN)/pytest $(RABBITMQ_TESTS) $(PYTEST_ARGS); \
	status=$$?; rabbitmqctl -q delete_vhost $$vhost; exit $$status

# The API and engine tests, and processes they start, through a PgBouncer of this run's own
# in transaction pooling mode (tests/support/pgbouncer.py: a free port, at most
# PGBOUNCER_POOL_SIZE server connections, removed after); the test database is created
# and dropped on PostgreSQL itself (TEST_POSTGRES_ADMIN_URL).
PGBOUNCER_TESTS ?= tests/api/test_agents.py tests/api/test_tasks.py tests/api/test_sessions.py \
	tests/api/test_idempotency.py tests/worker/test_engine.py tests/api/test_ws_heartbeat.py \
	tests/api/test_event_wakeups.py tests/test_processes.py tests/shared/test_pooler.py
test-pgbouncer: venv services pgbouncer
	$(BIN)/python -m tests.support.pgbouncer $(BIN)/pytest $(PGBOUNCER_TESTS) $(PYTEST_ARGS)

# Debian's Chromium for tests/browser (driven by Playwright from PyPI; no `playwright install`).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Debian's HAProxy for tests/test_multi_host.py (the test runs its own haproxy processes,
# never the system service).
haproxy:
	@command -v haproxy >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy)

# Debian's PgBouncer for make test-pgbouncer and tests/shared/test_pooler.py (the tests run
# their own pgbouncer processes, never the system service).
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv services
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
