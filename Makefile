# polycache: the README's two commands (`make demo`, `make test`) and the developer targets.
# Everything builds into ./target (CARGO_TARGET_DIR may point elsewhere inside the checkout).

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TERM_COLOR ?= never
PYTHON_VENV ?= $(CURDIR)/.venv

.PHONY: demo test test-rust test-c test-python test-readme setup lint fmt header fuzz bench bench-rust bench-c bench-python clean install tsan

## demo: a slow function memoized through memory://, then the hit/miss statistics.
demo:
	cargo run --quiet -p polycache --example demo

## test: everything — Rust, C (under valgrind), Python (against the built wheel), README examples, lints.
test: setup test-rust test-c test-python test-readme lint
	@echo "make test: all suites passed"

## setup: installs what the tests need when it is missing (apt-get, a Python virtual environment).
setup:
	bash scripts/install-system-deps.sh
	bash scripts/python-env.sh

# Tests run at once in each Rust test binary. Most of them wait on servers and sleeps, not
# on the CPU (the contract suite used 13 % of one core at two threads: 140 s, 37 s at eight);
# the fault suite runs its scenarios one at a time whatever this says.
RUST_TEST_THREADS ?= 8

test-rust:
	RUST_TEST_THREADS=$(RUST_TEST_THREADS) cargo test --workspace --exclude polycache-python
	cargo run --quiet -p polycache --example quickstart
	cargo run --quiet -p polycache --example async_quickstart
	cargo run --quiet -p polycache --example demo >/dev/null
	# A memory://-only core: what it can open it serves; the other backends' tests are not built.
	cargo test -p polycache --no-default-features --features memory
	# The optional OpenTelemetry spans: their suite and SpanQueue's doc example.
	cargo test -p polycache --features otel --test otel
	cargo test -p polycache --features otel --doc -- otel

test-c:
	bash tests/c/run.sh

## install: the C library, header and pkg-config file into $(PREFIX) (DESTDIR for packagers).
PREFIX ?= /usr/local
install:
	bash scripts/install-c.sh "$(PREFIX)"

## tsan: 8 threads x 1,000,000 mixed operations on one C handle under ThreadSanitizer.
tsan:
	POLYCACHE_PROFILE=release bash tests/c/tsan.sh 1000000

## test-python: the wheel and its suites on .venv's CPython; then, on every further CPython the
## machine has (3.9 to 3.14), a dev-profile wheel with the core suite and the Flask suite.
test-python:
	# The extension's own unit tests (its serializer's byte formats, Django's key checks).
	cargo test -p polycache-python --lib
	bash scripts/python-test.sh
	bash scripts/python-versions.sh
	bash scripts/python-sdist-test.sh
	bash scripts/django-suite.sh

test-readme:
	python3 scripts/check-readme.py

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	# Each backend alone (the library and its test builds), and memory:// alone in the C
	# library and the Python extension.
	for backend in memory redis memcached file sqlite postgres; do \
		cargo clippy -p polycache --no-default-features --features $$backend --lib --tests -- -D warnings || exit 1; \
	done
	cargo clippy -p polycache-ffi -p polycache-python --no-default-features --features memory -- -D warnings
	# The API docs: no unresolved or private intra-doc link.
	RUSTDOCFLAGS="-D warnings" cargo doc -p polycache --no-deps
	# The optional OpenTelemetry spans (not in `full`), with their tests and bench.
	cargo clippy -p polycache --features otel --all-targets -- -D warnings

fmt:
	cargo fmt --all

## header: regenerates include/polycache.h with the pinned cbindgen.
header:
	POLYCACHE_UPDATE_HEADER=1 cargo test -p polycache-ffi --test header

## faults: the fault suite with every fault held three times longer, then the load at full
## size (1,000,000 operations per backend); prints the tables of docs/reliability.md.
## (`make test` runs both in a short form.)
.PHONY: faults load
faults:
	set -o pipefail; POLYCACHE_FAULTS=full cargo test -p polycache --test faults -- --nocapture --test-threads 1 \
		| tee $(CARGO_TARGET_DIR)/faults.log
	python3 scripts/faults-table.py < $(CARGO_TARGET_DIR)/faults.log
	$(MAKE) load POLYCACHE_LOAD_OPS=1000000

## load: mixed load from 8 threads on every backend (POLYCACHE_LOAD_OPS per backend).
POLYCACHE_LOAD_OPS ?= 20000
load:
	set -o pipefail; POLYCACHE_LOAD_OPS=$(POLYCACHE_LOAD_OPS) cargo test -p polycache --test load -- --nocapture --test-threads 1 \
		| tee $(CARGO_TARGET_DIR)/load.log
	python3 scripts/faults-table.py < $(CARGO_TARGET_DIR)/load.log

## fuzz: every fuzz target of fuzz/ for FUZZ_SECONDS (default 60) each (docs/fuzzing.md).
## `make test` replays their saved corpus instead (cargo test -p polycache --lib fuzzing).
fuzz:
	bash scripts/fuzz.sh

## bench: the core against its map and moka, C against Rust (and its non-blocking gets against
## blocking ones from 8 threads), Python against its peers.
bench: bench-rust bench-c bench-python

bench-rust:
	cargo bench -p polycache --bench memory
	cargo bench -p polycache --bench security
	cargo bench -p polycache --bench redis_async
	cargo bench -p polycache --bench postgres
	cargo bench -p polycache --bench memcached_async
	cargo bench -p polycache --bench tiered_tracking
	python3 scripts/bench-ratios.py $(CARGO_TARGET_DIR)/criterion

bench-c:
	bash bench/c/run.sh
	bash bench/c/async.sh

bench-python: setup
	bash scripts/python-test.sh --build-only
	$(PYTHON_VENV)/bin/python bench/python/bench_memory.py
	$(PYTHON_VENV)/bin/python bench/python/bench_refresh.py
	$(PYTHON_VENV)/bin/python bench/python/bench_redis.py
	$(PYTHON_VENV)/bin/python bench/python/bench_async.py
	$(PYTHON_VENV)/bin/python bench/python/bench_memcached.py
	$(PYTHON_VENV)/bin/python bench/python/bench_file.py
	$(PYTHON_VENV)/bin/python bench/python/bench_sql.py
	$(PYTHON_VENV)/bin/python bench/python/bench_django.py

clean:
	cargo clean
	rm -rf dist build
