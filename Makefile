# edge-uploader developer and operator tasks. `make run` and `make test` work on a fresh
# Debian/Ubuntu machine: they create the virtual environment and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 4810
RUNDIR := .run

.PHONY: run test check lint unit integration bench venv system-deps clean install install-venv \
	install-files uninstall

# Two installs, one stamp each: the demo (`make run`, `make bench`) needs only the runtime;
# `make check` and `make test` add the dev extra (pytest, ruff, mypy, import-linter).
RUNTIME := $(VENV)/.installed-runtime
DEVTOOLS := $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(DEVTOOLS): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(RUNTIME)

## venv: .venv with the project and the dev tools
venv: $(DEVTOOLS)

# Test-only system packages (a Mosquitto broker for the MQTT tests, systemd-analyze for
# the unit checks, openssl for the TLS broker's certificates, headless Chromium for the
# status page). Installed only when missing; needs root or sudo.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' || missing="$$missing libfuse2"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## run: a local ingestion server plus the agent watching ./captures (Ctrl-C stops both)
run: $(RUNTIME)
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

## check: lint, formatting, types and the layer rule (ARCHITECTURE.md)
check: $(DEVTOOLS)
	$(BIN)/ruff check agent tests bench
	$(BIN)/ruff format --check agent tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: everything CI runs: lint, types, then the whole test suite
test: $(DEVTOOLS) system-deps check
	$(BIN)/pytest -q

bench: $(RUNTIME)
	$(BIN)/python bench/drain.py

clean:
	rm -rf $(VENV) $(RUNDIR) .pytest_cache .mypy_cache .ruff_cache *.egg-info build dist

# --- deployment: `sudo make install` on the device (docs/deploy.md) ------------------------
# DESTDIR stages everything under another root (packaging, tests): nothing outside it is
# touched, no user is created and systemd is not called. PREFIX is where the venv lives.
PREFIX      ?= /opt/edge-uploader
DESTDIR     ?=
UNITDIR     ?= /etc/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
BINDIR      ?= /usr/local/bin
CAPTUREDIR  ?= /srv/edge-uploader/captures
CONFDIR     := /etc/edge-uploader
SERVICE     := edge-uploader
STAGE       := $(DESTDIR)$(PREFIX)

define need_root
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then \
		echo "make install: run it as root (sudo make install), or stage it with DESTDIR=..."; \
		exit 1; fi
endef

## install: venv in $(PREFIX), the unit, a config skeleton (and the annotated example beside
## it) and an empty root-only key file
install: install-venv install-files
	@echo "installed. Next: put the API key in $(CONFDIR)/api_key, edit $(CONFDIR)/agent.toml,"
	@echo "then: systemctl enable --now $(SERVICE)   (docs: $(PREFIX)/docs/deploy.md)"

install-venv:
	$(need_root)
	rm -rf $(STAGE)/venv.new
	$(PYTHON) -m venv $(STAGE)/venv.new
	@# setuptools reuses build/: modules an older checkout built would ride along in the wheel
	rm -rf build
	$(STAGE)/venv.new/bin/pip install --quiet --no-cache-dir --disable-pip-version-check .
	@# scripts name their interpreter by absolute path: point them where the venv will live
	grep -rlI -F '$(STAGE)/venv.new' $(STAGE)/venv.new/bin | \
		xargs -r sed -i 's#$(STAGE)/venv.new#$(PREFIX)/venv#g'
	rm -rf $(STAGE)/venv.old
	if [ -d $(STAGE)/venv ]; then mv $(STAGE)/venv $(STAGE)/venv.old; fi
	mv $(STAGE)/venv.new $(STAGE)/venv
	rm -rf $(STAGE)/venv.old

install-files:
	$(need_root)
	install -D -m 0644 docs/deploy.md $(STAGE)/docs/deploy.md
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(BINDIR)
	sed 's#/opt/edge-uploader#$(PREFIX)#g' systemd/$(SERVICE).service > $(DESTDIR)$(UNITDIR)/$(SERVICE).service
	chmod 0644 $(DESTDIR)$(UNITDIR)/$(SERVICE).service
	install -D -m 0644 systemd/$(SERVICE).sysusers $(DESTDIR)$(SYSUSERSDIR)/$(SERVICE).conf
	ln -sfn $(PREFIX)/venv/bin/edge-uploader $(DESTDIR)$(BINDIR)/edge-uploader
	install -d -m 0755 $(DESTDIR)$(CONFDIR)
	@# never overwrite a config or a key that is already there
	if [ ! -e $(DESTDIR)$(CONFDIR)/agent.toml ]; then \
		install -m 0640 systemd/agent.toml $(DESTDIR)$(CONFDIR)/agent.toml; fi
	@# the annotated example documents every key; it is reference, refreshed on every install
	install -m 0644 config/agent.example.toml $(DESTDIR)$(CONFDIR)/agent.example.toml
	if [ ! -e $(DESTDIR)$(CONFDIR)/api_key ]; then \
		install -m 0600 /dev/null $(DESTDIR)$(CONFDIR)/api_key; fi
	if [ ! -e $(DESTDIR)/etc/default/$(SERVICE) ]; then \
		install -D -m 0600 systemd/$(SERVICE).default $(DESTDIR)/etc/default/$(SERVICE); fi
	install -d -m 2775 $(DESTDIR)$(CAPTUREDIR)
	@if [ -z "$(DESTDIR)" ]; then \
		systemd-sysusers $(SYSUSERSDIR)/$(SERVICE).conf 2>/dev/null || id -u $(SERVICE) >/dev/null 2>&1 || \
			useradd --system --user-group --home-dir /var/lib/$(SERVICE) --shell /usr/sbin/nologin $(SERVICE); \
		chown root:$(SERVICE) $(CONFDIR)/agent.toml; \
		chown root:root $(CONFDIR)/api_key; \
		chown $(SERVICE):$(SERVICE) $(CAPTUREDIR); \
		if [ -d /run/systemd/system ]; then \
			systemctl daemon-reload; systemctl try-restart $(SERVICE).service; fi; \
	fi

## uninstall: remove the program and the unit; keep config, keys, queue and captures
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now $(SERVICE).service || true; fi
	rm -f $(DESTDIR)$(UNITDIR)/$(SERVICE).service $(DESTDIR)$(SYSUSERSDIR)/$(SERVICE).conf
	if [ -L $(DESTDIR)$(BINDIR)/edge-uploader ]; then rm -f $(DESTDIR)$(BINDIR)/edge-uploader; fi
	rm -rf $(STAGE)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept: $(CONFDIR) (config, keys), /var/lib/$(SERVICE) (queue), $(CAPTUREDIR)"
	@echo "      and the user $(SERVICE); remove them by hand if you want them gone"
