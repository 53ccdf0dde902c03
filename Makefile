# nhlink-dbus developer entry points.  `make test` and `make demo` work from a
# clean clone: they install what they need (Debian packages with apt when run
# as root, PyPI packages into .venv).

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
# Debian 12's library versions (the .deb runs on them): the hub client tests
# run a second time against these in .venv-deb12.
VENV_DEB    := .venv-deb12
DEB12_PINS  := websockets==10.4 httpx==0.23.3 dbus-next==0.2.3
DEB12_TEST_TOOLS := pytest pytest-timeout pytest-asyncio hypothesis

APT_PACKAGES := mtools dosfstools dbus curl libdbus-1-dev libglib2.0-dev \
                libgirepository1.0-dev libcairo2-dev pkg-config systemd gcc \
                libglib2.0-bin fdisk gdisk

.PHONY: setup apt venv venv-deb12 test lint typecheck pytest pytest-deb12 difftest bench demo clean

setup: apt venv

apt:
	@if [ "$$(id -u)" = "0" ]; then \
	  missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    echo "apt: installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else \
	  echo "setup: not root, skipping apt (needs: $(APT_PACKAGES))"; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

$(VENV_DEB)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_DEB)
	$(VENV_DEB)/bin/python -m pip install -q --upgrade pip
	$(VENV_DEB)/bin/python -m pip install -q -e . $(DEB12_TEST_TOOLS) $(DEB12_PINS)
	touch $@

venv-deb12: $(VENV_DEB)/.installed

lint: venv
	$(VENV)/bin/ruff check nhlink_dbus nhlink_devtools tests bench demo examples
	$(VENV)/bin/ruff format --check nhlink_dbus nhlink_devtools tests bench demo examples

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VPY) -m pytest -q

# The hub client, simulator, downloader and daemon tests again on Debian 12's
# websockets 10.4 / httpx 0.23.3 / dbus-next 0.2.3 (dbusmock runs from .venv).
HUB_CLIENT_TESTS := tests/core/test_phoenix.py tests/core/test_backoff.py \
                    tests/core/test_hub_messages.py tests/core/test_hub_settings.py \
                    tests/core/test_hub_session.py tests/aio/test_ws_compat.py \
                    tests/aio/test_dbus_compat.py \
                    tests/aio/test_hub_client_sim.py \
                    tests/core/test_download_policy.py tests/aio/test_downloader_sim.py \
                    tests/hubsim tests/integration

pytest-deb12: venv venv-deb12
	NHLINK_DBUSMOCK_PYTHON=$(CURDIR)/$(VPY) $(VENV_DEB)/bin/python -m pytest -q $(HUB_CLIENT_TESTS)

test: setup lint typecheck pytest pytest-deb12

# Only the differential tests against the real fwup (README), 2000 cases unless
# FWUP_DIFF_CASES says otherwise; the reference comes from FWUP_REF or is built from
# ../shared/tools/fwup.
difftest: venv
	FWUP_DIFF_REQUIRED=1 FWUP_DIFF_CASES=$${FWUP_DIFF_CASES:-2000} $(VPY) -m pytest -q \
	  tests/fwup_diff tests/fwup/test_diff_fixtures.py

bench: setup
	$(VPY) bench/bench_fwup_apply.py
	$(VPY) bench/bench_e2e_update.py

clean:
	rm -rf $(VENV) $(VENV_DEB) .mypy_cache .ruff_cache .pytest_cache build *.egg-info

demo: setup
	$(VPY) demo/run_demo.py
