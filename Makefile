# nhlink-dbus developer entry points.  `make test` and `make demo` work from a
# clean clone: they install what they need (Debian packages with apt when run
# as root, PyPI packages into .venv).

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
# Debian 12's library versions (the .deb runs on them): the hub client tests
# run a second time against these in .venv-deb12.
VENV_DEB    := .venv-deb12
DEB12_PINS  := websockets==10.4 httpx==0.23.3 dbus-next==0.2.3 pyudev==0.24.0 cryptography==38.0.4
DEB12_TEST_TOOLS := pytest pytest-timeout pytest-asyncio hypothesis

APT_PACKAGES := mtools dosfstools dbus curl libsodium23 libdbus-1-dev libglib2.0-dev \
                libgirepository1.0-dev libcairo2-dev pkg-config systemd gcc \
                libglib2.0-bin fdisk gdisk xdelta3 umockdev gir1.2-umockdev-1.0 e2fsprogs \
                xvfb xdotool imagemagick gir1.2-gtk-3.0 python3-gi python3-gbulb \
                python3-pyqt5 python3-dbus-next time

.PHONY: setup apt venv venv-deb12 test test-long fuzz lint typecheck pytest pytest-deb12 difftest \
        bench demo clean deb deb-test

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

# Editable installs in "compat" mode: a .pth with the repository's path, not setuptools'
# import hook (which costs every process ~20 ms of start-up that an installed package does
# not pay, and the benchmarks time start-up).
EDITABLE := --config-settings editable_mode=compat

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(EDITABLE) -e '.[dev]' 2>/dev/null || $(VPY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

$(VENV_DEB)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV_DEB)
	$(VENV_DEB)/bin/python -m pip install -q --upgrade pip
	$(VENV_DEB)/bin/python -m pip install -q $(EDITABLE) -e . $(DEB12_TEST_TOOLS) $(DEB12_PINS) 2>/dev/null \
	  || $(VENV_DEB)/bin/python -m pip install -q -e . $(DEB12_TEST_TOOLS) $(DEB12_PINS)
	touch $@

venv-deb12: $(VENV_DEB)/.installed

LINTED := nhlink_dbus nhlink_devtools nhlink_kiosk tests bench demo examples debian/tests \
          packaging

lint: venv
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VPY) -m pytest -q

# The hub client, simulator, downloader, daemon and media tests again on Debian 12's
# websockets 10.4 / httpx 0.23.3 / dbus-next 0.2.3 / pyudev 0.24.0 (dbusmock runs from .venv).
HUB_CLIENT_TESTS := tests/core/test_phoenix.py tests/core/test_backoff.py \
                    tests/core/test_hub_messages.py tests/core/test_hub_settings.py \
                    tests/core/test_hub_session.py tests/aio/test_ws_compat.py \
                    tests/aio/test_dbus_compat.py \
                    tests/aio/test_hub_client_sim.py \
                    tests/core/test_download_policy.py tests/aio/test_downloader_sim.py \
                    tests/aio/test_http_transport.py tests/aio/test_system_trust.py \
                    tests/hubsim tests/integration tests/media \
                    tests/faults/test_tls_failures.py tests/faults/test_nh1_clock.py \
                    tests/faults/test_reconnect_storm.py tests/faults/test_slow_download.py \
                    tests/faults/test_loop_blocking.py

# The kill matrix (tests/integration/test_kill_matrix.py) is about the daemon's own
# journal, not library versions: on Debian 12's only three rows run (a question, a
# write cut short with the external fwup, a pending reboot), the whole of it above.
KILL_MATRIX := tests/integration/test_kill_matrix.py
KILL_MATRIX_DEB12 := "$(KILL_MATRIX)::test_killed_at[awaiting-decision-builtin]" \
                     "$(KILL_MATRIX)::test_killed_at[writing-1MiB+64KiB-fwup]" \
                     "$(KILL_MATRIX)::test_killed_at[reboot-delay-builtin]"

pytest-deb12: venv venv-deb12
	NHLINK_DBUSMOCK_PYTHON=$(CURDIR)/$(VPY) $(VENV_DEB)/bin/python -m pytest -q \
	    --ignore=$(KILL_MATRIX) $(HUB_CLIENT_TESTS)
	NHLINK_DBUSMOCK_PYTHON=$(CURDIR)/$(VPY) $(VENV_DEB)/bin/python -m pytest -q $(KILL_MATRIX_DEB12)

test: setup lint typecheck pytest pytest-deb12

# Tests marked "long" (a minute or more each: e.g. a download held at 1 KiB/s
# until the worst-case timer stops it); not part of `make test`.
test-long: setup
	$(VPY) -m pytest -q -m long

# Every parser of outside input and every D-Bus method, 10^5 inputs each (about
# 10 minutes); prints the count and time per target. FUZZ_BUDGET=N for another
# budget. A small budget of the same runs inside `make test` (tests/fuzz).
FUZZ_BUDGET ?= 100000
fuzz: setup
	$(VPY) -m tests.fuzz --budget $(FUZZ_BUDGET)

# Only the differential tests against the real fwup (README), 2000 cases unless
# FWUP_DIFF_CASES says otherwise; the reference comes from FWUP_REF or is built from
# ../shared/tools/fwup.
difftest: venv
	FWUP_DIFF_REQUIRED=1 FWUP_DIFF_CASES=$${FWUP_DIFF_CASES:-2000} $(VPY) -m pytest -q \
	  tests/fwup_diff tests/fwup/test_diff_fixtures.py

bench: setup
	$(VPY) bench/bench_fwup_apply.py
	$(VPY) bench/bench_e2e_update.py
	$(VPY) bench/bench_decide_flood.py

# The Debian packages (debian/), built from a copy of the checkout (tracked and
# untracked files, not ignored ones) in $(DEB_OUT), with Debian's tools only
# (no pyenv, no venv on PATH); then lintian (an error or warning fails).
# As root, installs the build dependencies of debian/control with apt.
DEB_OUT := build/deb
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin

deb:
	@if [ "$$(id -u)" = "0" ] && ! { PATH=$(DEB_PATH) dpkg-checkbuilddeps 2>/dev/null \
	      && command -v lintian >/dev/null; }; then \
	  echo "apt: installing the build dependencies of debian/control, lintian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    -o DPkg::Lock::Timeout=600 --no-install-recommends dpkg-dev lintian >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq -o DPkg::Lock::Timeout=600 \
	    --no-install-recommends ./ >/dev/null; \
	fi
	rm -rf $(DEB_OUT) && mkdir -p $(DEB_OUT)/src
	git ls-files -co --exclude-standard -z \
	  | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(DEB_OUT)/src
	cd $(DEB_OUT)/src && env -i PATH=$(DEB_PATH) HOME="$$HOME" LC_ALL=C.UTF-8 \
	  dpkg-buildpackage -us -uc -b > ../build.log 2>&1 || { tail -40 ../build.log; exit 1; }
	rm -rf $(DEB_OUT)/src
	env -i PATH=$(DEB_PATH) HOME="$$HOME" lintian -I --show-overrides --fail-on error,warning \
	  $(DEB_OUT)/*.changes
	@ls -1 $(DEB_OUT)/*.deb

# The .deb in a fresh Debian 12 root (mmdebstrap) in a chroot: install from
# Debian alone, the autopkgtest, systemd-analyze, purge. Root only.
deb-test: deb
	packaging/fresh-root-test $(DEB_OUT)

clean:
	rm -rf $(VENV) $(VENV_DEB) .mypy_cache .ruff_cache .pytest_cache build *.egg-info

demo: setup
	$(VPY) demo/run_demo.py
