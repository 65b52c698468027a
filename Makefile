# edge-uploader developer and operator tasks. `make run` and `make test` work on a fresh
# Debian/Ubuntu machine: they create the virtual environment and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 4810
RUNDIR := .run

.PHONY: run test check lint unit integration bench venv system-deps clean

$(BIN)/edge-uploader: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/edge-uploader

# Test-only system packages (a Mosquitto broker for the MQTT tests, systemd-analyze for
# the unit checks). Installed only when missing; needs root or sudo.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## run: a local ingestion server plus the agent watching ./captures (Ctrl-C stops both)
run: venv
	@mkdir -p captures $(RUNDIR)
	@$(BIN)/edge-uploader local-ingestion --host 127.0.0.1 --port $(PORT) --data-dir $(RUNDIR)/ingestion \
		--api-key-file config/dev-api-key --quiet & server=$$!; \
	trap 'kill $$server 2>/dev/null; wait $$server 2>/dev/null' EXIT INT TERM; \
	sleep 1; \
	echo ""; \
	echo "  Drop files into:     $$(pwd)/captures   (e.g. cp some.wav captures/)"; \
	echo "  Samples arrive in:   $$(pwd)/$(RUNDIR)/ingestion/files/<sampleId>/"; \
	echo "  Every upload logged: $$(pwd)/$(RUNDIR)/ingestion/index.jsonl"; \
	echo "  Queue status:        $(BIN)/edge-uploader status --config config/dev.toml"; \
	echo ""; \
	$(BIN)/edge-uploader run --config config/dev.toml

## check: lint and type-check
check: venv
	$(BIN)/ruff check agent tests bench
	$(BIN)/ruff format --check agent tests bench
	$(BIN)/mypy

## test: everything CI runs: lint, types, then the whole test suite
test: venv system-deps check
	$(BIN)/pytest -q

bench: venv
	$(BIN)/python bench/drain.py

clean:
	rm -rf $(VENV) $(RUNDIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info
