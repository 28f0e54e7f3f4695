# wiregate developer entry points:
#   make demo          throwaway PostgreSQL with fake PII behind the gateway (Ctrl-C stops it)
#   make test          every test (unit and end-to-end); make test PYTEST_ARGS="-k policy -x"
#   make bench         gateway vs direct vs PgBouncer, full run (a few minutes)
#   make bench-short   the same, short (CI)
# Each target creates .venv and installs what it needs, Debian packages included
# (apt-get; through sudo when not root).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.wiregate-installed
PYTEST_ARGS ?=
DEMO_ARGS   ?=
BENCH_ARGS  ?=
SUDO        := $(if $(filter 0,$(shell id -u)),,sudo)
# the reference PostgreSQL MCP server (npm), driven by tests/e2e/test_postgres_mcp.py
MCP_NODE           := $(VENV)/mcp-node
MCP_SERVER         := $(MCP_NODE)/node_modules/.bin/mcp-server-postgres
MCP_SERVER_PACKAGE := @modelcontextprotocol/server-postgres@0.6.2

# How to tell whether a Debian package's program is present.
have_postgresql        = compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
have_postgresql-client = command -v psql >/dev/null
have_pgbouncer         = command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer
have_wrk               = command -v wrk >/dev/null
have_python3-venv      = $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1
have_nodejs            = command -v node >/dev/null
have_npm               = command -v npm >/dev/null
have_openssh-server    = test -x /usr/sbin/sshd
have_openssh-client    = command -v ssh >/dev/null && command -v scp >/dev/null && command -v sftp >/dev/null
have_rsync             = command -v rsync >/dev/null
have_asciinema         = command -v asciinema >/dev/null

# $(call apt_ensure,pkg1 pkg2 ...): apt-get install those whose program is missing.
# apt-get update runs once, and only when the package lists are older than an hour.
define apt_ensure
	@missing=""; \
	$(foreach p,$(1),if ! { $(have_$(p)); }; then missing="$$missing $(p)"; fi;) \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  if [ -z "$$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -n 1)" ]; then \
	    $(SUDO) apt-get update -q; \
	  fi; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

.PHONY: help demo test bench bench-short setup sysdeps-demo sysdeps-test sysdeps-bench clean

help:
	@sed -n '2,7p' Makefile | sed 's/^# *//'

demo: sysdeps-demo $(STAMP)
	$(VENV)/bin/wiregate demo $(DEMO_ARGS)

test: sysdeps-test $(STAMP) $(MCP_SERVER)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: sysdeps-bench $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

bench-short: sysdeps-bench $(STAMP)
	$(PY) -m benchmarks.run --short $(BENCH_ARGS)

setup: $(STAMP)

sysdeps-demo:
	$(call apt_ensure,postgresql openssh-server openssh-client)

sysdeps-test:
	$(call apt_ensure,postgresql postgresql-client nodejs npm openssh-server openssh-client rsync asciinema)

sysdeps-bench:
	$(call apt_ensure,postgresql postgresql-client pgbouncer openssh-server openssh-client wrk)

# The virtualenv; Debian needs python3-venv for `python3 -m venv`.
$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
	  { echo "make: wiregate needs Python >= 3.11 as $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(call apt_ensure,python3-venv)
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

$(MCP_SERVER): | $(PY)
	$(call apt_ensure,nodejs npm)
	mkdir -p $(MCP_NODE)
	npm install --prefix $(MCP_NODE) --no-audit --no-fund --loglevel=error $(MCP_SERVER_PACKAGE)
	@test -x $@ && touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
