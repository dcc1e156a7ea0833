# kmsd - thin wrapper around CMake. `make run` and `make test` work on a fresh Debian 12
# machine as root: `deps` installs whatever Debian packages are missing first.

BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
ADDR       ?= 127.0.0.1:8200
ROOT_TOKEN ?=
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

# Build and test dependencies (Debian package names).
DEPS := cmake make gcc pkg-config libssl-dev liblmdb-dev libevent-dev libjansson-dev libyajl-dev \
        libjwt-dev libcmocka-dev libyaml-dev lmdb-utils python3 python3-hvac \
        python3-cryptography python3-jwt python3-requests python3-yaml python3-jsonschema \
        openssl clang libclang-rt-14-dev prometheus libpq-dev postgresql-15 strace
# the KMS plugin (docs/kms-plugin.md): HTTP/2, protobuf-c and its compiler; the gRPC test client,
# and HPACK for the tests' hand-driven HTTP/2 client (kms_plugin_helpers.RawH2)
DEPS += libnghttp2-dev protobuf-c-compiler libprotobuf-c-dev python3-grpcio python3-grpc-tools \
        python3-protobuf python3-hpack
# the node-vault tests (tests/node): Node.js. Then npm (Debian's package when no npm comes
# with nodejs) and `npm ci` from the committed package-lock.json whenever node_modules is
# missing or older than the lock. NODE_TESTS=0 leaves them out (lint, coverage's extra tools).
DEPS += nodejs
NODE_TESTS ?= 1
NODE_DIR   := tests/node

.PHONY: all deps build run test test-asan fuzz crash-test install clean

all: build

deps:
	@missing=$$(for p in $(DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing $$(echo $$missing)"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install packages" >&2; exit 1; fi; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
ifeq ($(NODE_TESTS),1)
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "make deps: installing npm"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install packages" >&2; exit 1; fi; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm; \
	fi
	@$(MAKE) -s --no-print-directory $(NODE_DIR)/node_modules/.package-lock.json

$(NODE_DIR)/node_modules/.package-lock.json: $(NODE_DIR)/package-lock.json $(NODE_DIR)/package.json
	@echo "make deps: npm ci in $(NODE_DIR)"
	cd $(NODE_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@
endif

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

# The dev server records every operation in $(BUILD)/dev-audit.log (kmsctl audit list works).
run: build
	./$(BUILD)/kmsd server -dev -dev-listen-address=$(ADDR) -audit-file=$(BUILD)/dev-audit.log \
	  $(if $(ROOT_TOKEN),-dev-root-token-id=$(ROOT_TOKEN))

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (separate build dir).
test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKMS_SANITIZE=address,undefined >/dev/null
	cmake --build build-asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --test-dir build-asan --output-on-failure -j$(JOBS) -LE fuzz

# libFuzzer targets, FUZZ_SECONDS each (default 60).
fuzz: deps
	FUZZ_SECONDS=$${FUZZ_SECONDS:-60} tests/fuzz/run.sh

# SIGKILL the server under mixed load ROUNDS times (default 100); nothing acknowledged may be lost.
crash-test: build
	KMSD_BIN=$(CURDIR)/$(BUILD)/kmsd /usr/bin/python3 tests/crash/crash_test.py $${ROUNDS:-100}

install: build
	cmake --install $(BUILD)

.PHONY: bench
# Benchmark against a bare libevent ceiling (bench/run.sh; BENCH_* settings there, ~6 minutes).
bench: build
	BUILD=$(BUILD) bench/run.sh

.PHONY: bench-sign
# The signature part of `make bench` alone (bench/sign.sh: kmsd vs openssl speed, about 40 s).
bench-sign: build
	BUILD=$(BUILD) bench/sign.sh

.PHONY: bench-ha
# The HA part of `make bench` alone (bench/ha.sh: replicas on a throwaway PostgreSQL, ~2 minutes).
bench-ha: build
	BUILD=$(BUILD) bench/ha.sh

.PHONY: bench-plugin
# The KMS v2 plugin part of `make bench` alone (bench/plugin.sh, about a minute).
bench-plugin: build
	BUILD=$(BUILD) bench/plugin.sh

# Source checks run by .ci/run (house style 23): clang-format, banned functions, and includes
# that keep to module boundaries. `make lint` installs clang-format-14 if it is missing.
LINT_DEPS := clang-format-14 git

.PHONY: lint
lint:
	@$(MAKE) --no-print-directory deps DEPS="$(LINT_DEPS)" NODE_TESTS=0
	scripts/check-format.sh
	scripts/check-banned.sh
	scripts/check-includes.sh

# Line coverage of the unit tests alone (ctest -L unit) in build-coverage/, per file and per
# folder (scripts/coverage-report.py); installs gcovr if it is missing. Atomic counters because
# the tests run threads. Exits non-zero if a unit test failed, after printing the table.
COVERAGE_DEPS := gcovr
COVERAGE_DIRS := api|engine|auth|audit|crypto|storage|server|cli|kmsplugin

.PHONY: coverage
coverage: deps
	@$(MAKE) --no-print-directory deps DEPS="$(COVERAGE_DEPS)" NODE_TESTS=0
	cmake -S . -B build-coverage -DCMAKE_BUILD_TYPE=Debug -DKMS_BUILD_BENCH=OFF \
	  "-DCMAKE_C_FLAGS=--coverage -fprofile-update=atomic" \
	  -DCMAKE_EXE_LINKER_FLAGS=--coverage >/dev/null
	cmake --build build-coverage -j$(JOBS)
	find build-coverage -name '*.gcda' -delete
	@status=0; ctest --test-dir build-coverage --output-on-failure -j$(JOBS) -L unit || status=$$?; \
	gcovr -r . build-coverage --gcov-ignore-parse-errors -f '($(COVERAGE_DIRS))/' \
	  --json-summary -o build-coverage/coverage.json && \
	scripts/coverage-report.py build-coverage/coverage.json && exit $$status

clean:
	rm -rf $(BUILD)
