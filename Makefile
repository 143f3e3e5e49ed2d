# pyqcore — `make demo` runs the demo, `make test` runs the tests. Both install what is missing:
# a virtualenv in .venv with the package (Cython codec built), and redis-server.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test test-versions lint lua fuzz soak bench redis-server wheel clean

demo: $(STAMP) redis-server
	$(PY) -m pyqcore demo

# The whole suite on the Cython codec; then what depends on the codec on the pure-Python
# fallback: the serializer, job records in the flows (tests/core), the queue's and the DLQ's
# round trips, bad payloads, handlers, `pyqcore record` and the DLQ listing. On one server
# only (-k drops the cluster and Sentinel cases: the backend never touches the codec), and
# no fault or failover test twice.
CODEC_TESTS := tests/serializer tests/core tests/test_queue.py tests/test_dead_letter.py \
               tests/test_bad_input.py tests/test_handlers.py \
               tests/test_cli.py::test_the_readmes_redis_cli_lines_add_a_job_a_worker_runs \
               tests/test_cli.py::test_dlq_list_shows_payloads_as_text_not_markup
test: $(STAMP) redis-server
	$(PY) -m pytest -q
	PYQCORE_PUREPYTHON=1 $(PY) -m pytest -q $(CODEC_TESTS) -k "not cluster and not sentinel"

# Every other Python minor version pyproject.toml declares: a venv each in build/venvs/ with the
# package installed (Cython codec built), an import check and a fast subset of the tests
# (.ci/test-versions; VERSIONS="3.12 3.13" picks some).
test-versions: redis-server
	.ci/test-versions $(VERSIONS)

lint: $(STAMP)
	$(PY) -m ruff check pyqcore tests bench
	$(PY) -m mypy

# Refill the shared Lua (lua/includes/) into every script after editing an include.
lua: $(STAMP)
	$(PY) -c "from pathlib import Path; from pyqcore.scripts import sync_includes; \
	print(*(f'updated {p}' for p in sync_includes(Path('lua'))), sep='\n')"

# A longer fuzz run of the decoder and of every script's ARGV (CI runs a few seconds of each).
fuzz: $(STAMP) redis-server
	PYQCORE_FUZZ_SECONDS=$${SECONDS_TO_FUZZ:-300} $(PY) -m pytest -q tests/serializer/test_fuzz.py
	PYQCORE_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-2000} $(PY) -m pytest -q tests/test_scripts_fuzz.py

# A longer model check of the queue's state machine (tests/test_queue_model.py: make test runs
# 120 sequences of 80 steps on the sync API, 40 on asyncio).
.PHONY: model
model: $(STAMP) redis-server
	PYQCORE_MODEL_EXAMPLES=$${MODEL_EXAMPLES:-3000} PYQCORE_MODEL_STEPS=$${MODEL_STEPS:-150} \
	  $(PY) -m pytest -q tests/test_queue_model.py

# Kill workers and restart redis-server under load for SOAK_SECONDS, then account for every job.
soak: $(STAMP) redis-server
	$(PY) -m tests.reliability.soak --seconds $${SOAK_SECONDS:-300} --million

# pyqcore against its peers on one Redis (bench/README.md); BENCH_ARGS=--quick for a short run.
bench: $(STAMP) redis-server
	$(PY) bench/run.py $(BENCH_ARGS)

wheel: $(STAMP)
	rm -rf dist
	$(PY) -m pip wheel --no-deps -q -w dist .

$(STAMP): pyproject.toml setup.py ext/_cmsgpack.pyx
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# (redis-sentinel: the Sentinel tests' three sentinels)
redis-server:
	@{ command -v redis-server && command -v redis-cli && command -v redis-sentinel; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server and redis-sentinel from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools redis-sentinel >/dev/null; \
	  else \
	    echo "redis-server or redis-sentinel is missing: install them with 'sudo apt-get install redis-server redis-sentinel'" >&2; exit 1; \
	  fi; }

clean:
	rm -rf $(VENV) build dist *.egg-info pyqcore/serializer/*.so ext/*.c

# Mutation testing (tests/mutants): each mutant of lua/ and pyqcore/core/ in a scratch copy under
# build/mutants/, against the fast behavioural tests; prints killed / survived and the kill rates
# (results in build/mutants/results.txt). MUTANTS_ARGS="-k wake --jobs 1" picks and tunes.
.PHONY: mutants
mutants: $(STAMP) redis-server
	$(PY) -m tests.mutants $(MUTANTS_ARGS)
