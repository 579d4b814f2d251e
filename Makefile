# Orochi: build, install, test, demo, bench.
#
#   make deps      system packages (PostgreSQL 15 + server headers, Python 3.11, compilers)
#   make venv      the virtualenv backends and tests use, $(OROCHI_PREFIX)/venv
#   make build     Cython kernels + Python package as a new release, then the C bridge
#   make install   install the bridge into PostgreSQL (sudo when not root)
#
# Installing while servers run is safe: the Python package goes into a new directory
# under $(OROCHI_PREFIX)/releases and a symlink is switched to it atomically; running
# backends keep the release (and the orochi.so) they started with, new ones take the
# new one; a preloading server keeps its own until it restarts (ci/install-release.py).
#   make test      run the test suite against real PostgreSQL 15 clusters
#   make test-parallel   the parallel-mode pass (below)
#   make demo      run the demo
#   make bench     run the benchmarks
#   make clean     remove build products (not the venv)
#
# PYTEST_ARGS is passed to pytest (e.g. make test PYTEST_ARGS="-k columnar -x").

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
OROCHI_PREFIX ?= /opt/orochi
VENV = $(OROCHI_PREFIX)/venv
PYTHON = $(VENV)/bin/python
PYTEST_ARGS ?=

export OROCHI_PREFIX

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Rebuilt when the requirements or the script change; lives in the venv so that a
# deleted venv is rebuilt.
VENV_STAMP = $(VENV)/.orochi-venv-stamp

PGEXT_VARS = PG_CONFIG=$(PG_CONFIG) OROCHI_VENV=$(VENV)

PYTEST_FLAGS =
ifeq ($(CI),true)
PYTEST_FLAGS += -ra
endif

# The tests run in TEST_WORKERS processes (pytest-xdist), each with clusters of its
# own. A test file runs whole, in order, in one of them (--dist loadfile), so module
# fixtures are made once, as in a single process. A single process keeps about one core
# busy (the test and the backend serving it take turns, and wait for servers to start);
# three keep CI's two cores busy while some wait (the default suite on an idle 2-core
# machine: 13 min 15 s with two, 11 min 11 s with three). TEST_WORKERS=0 runs the tests in
# the pytest process itself.
TEST_WORKERS ?= 3
ifneq ($(TEST_WORKERS),0)
PYTEST_FLAGS += -n $(TEST_WORKERS) --dist loadfile
endif

.PHONY: deps venv build install test test-parallel parallel-pass demo bench clean

deps:
	ci/install-system-deps.sh

$(VENV_STAMP): requirements.txt requirements-dev.txt ci/make-venv.sh | deps
	ci/make-venv.sh
	touch $@

venv: deps $(VENV_STAMP)

build: venv
	$(PYTHON) ci/install-release.py --prefix $(OROCHI_PREFIX)
	chmod -R a+rX $(VENV)
	$(MAKE) -C pgext $(PGEXT_VARS)

install: build
	$(SUDO) $(MAKE) -C pgext install $(PGEXT_VARS)

test: install
	$(VENV)/bin/pytest $(PYTEST_FLAGS) $(PYTEST_ARGS)

# The parallel-mode pass: with force_parallel_mode = regress every query that may run in
# parallel mode does, so SQL that Python runs from scans and hooks goes without
# sub-transactions (docs/ARCHITECTURE.md, "Parallel query"). CI runs it after `make test`
# (.ci/run). Not the whole suite: the default suite takes about 10 of CI's 20 minutes and
# a whole second pass in this mode about as long again, so the pass covers where parallel
# mode changes what the bridge does: the bridge, the safety tests (less the fuzzer and the
# multi-cluster ones, which run in the default pass), the columnar engine and its HTAP
# writes. Measured on a busy 2-core machine: this pass 4.6 min (301 tests), the default
# suite 19.5 min there, a whole-suite pass in this mode 33 min. The whole suite passes in
# this mode too: `make test-parallel PARALLEL_PASS_TESTS=tests`.
PARALLEL_PASS_TESTS ?= tests/bridge tests/safety tests/columnar tests/htap
PARALLEL_PASS_DESELECT = -k "not sqlsmith and not recovery_conflict and not preload and not install"

test-parallel: install parallel-pass

parallel-pass:
	$(VENV)/bin/pytest $(PYTEST_FLAGS) --pg-setting force_parallel_mode=regress \
		$(PARALLEL_PASS_DESELECT) $(PYTEST_ARGS) $(PARALLEL_PASS_TESTS)

demo: install
	$(PYTHON) -m orochi_fdw.demo

bench: install
	$(VENV)/bin/pip install -q -r requirements-bench.txt
	$(PYTHON) bench/run_all.py

clean:
	if [ -f pgext/Makefile ]; then $(MAKE) -C pgext clean $(PGEXT_VARS); fi
	rm -rf build dist *.egg-info
	rm -f cython_kernels/*.c cython_kernels/*.html
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
