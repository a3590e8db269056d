# Two commands for a newcomer: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
# tests/integration/test_prometheus.py needs Debian's prometheus package (prometheus + promtool) and
# tests/unit/test_compose.py Debian's docker-compose (validates without an engine); both skip without; `make test` installs it first only where that can work: as root with apt-get.
PROMETHEUS_FOR_TEST := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && echo prometheus)

.PHONY: install demo test lint unit integration bench clean schemas prometheus eval

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "LiveLens needs Python 3.11 (torch wheels)"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(BIN)/livelens demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: install
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

integration: install
	$(BIN)/pytest -q tests/integration $(PYTEST_ARGS)

# Installs Prometheus when missing. Run directly without root or apt-get it says so and fails; as a
# dependency of `make test` (root with apt-get only) a failed install only warns, and the test skips.
prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
		&& command -v docker-compose >/dev/null 2>&1; then \
		exit 0; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "make prometheus: needs root and apt-get (sudo apt-get install prometheus)" >&2; exit 1; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends prometheus docker-compose \
			|| { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus docker-compose; } \
			|| echo "make prometheus: could not install prometheus/docker-compose; their tests will skip" >&2; \
	fi

eval: install  # the README's headline: defaults only, exactly what a worker runs
	$(BIN)/livelens eval --dataset microlens-50k --output eval-results

test: install lint $(PROMETHEUS_FOR_TEST)
	$(BIN)/pytest -q -ra $(PYTEST_ARGS)

schemas: install
	$(BIN)/livelens schemas

clean:
	rm -rf .livelens .pytest_cache
