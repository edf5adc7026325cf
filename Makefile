# Two entry points (see README.md):
#   make test   install dependencies, configure, build, run the whole test suite through ctest
#   make serve  the same set-up, then the main job on the embedded default model
BUILD ?= build
JOBS ?= $(shell nproc)
DATA ?= data

.PHONY: deps configure build test serve default-model clean

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

# Prepares the corpus and trains the default model the first time (about 10 minutes on 2 cores),
# cached in $(DATA)/ afterwards.
default-model: build
	@bash scripts/default-model.sh $(BUILD)/mnemo $(DATA)

serve: default-model
	@bash scripts/serve.sh $(BUILD)/mnemo $(DATA)

clean:
	rm -rf $(BUILD)

# libFuzzer targets for every parser of outside input (docs/FUZZING.md): builds build-fuzz/ with clang-14,
# then runs each target for FUZZ_SECONDS (default 60) on a copy of its seeds; fails if any target crashes.
# Depends on build: the `routes` target links the main build's libraries.
.PHONY: fuzz
fuzz: build
	@FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) JOBS=$(JOBS) MNEMO_MAIN_BUILD=$(BUILD) bash fuzz/run.sh

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (docs/RELIABILITY.md, "Sanitizers"):
# its own build in build-asan/, every finding fatal.
.PHONY: test-asan test-tsan
test-asan: deps
	@cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMNEMO_SANITIZE=address,undefined >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=$${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
	  UBSAN_OPTIONS=$${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
	  ctest --output-on-failure -j $(JOBS) --timeout 1800

# The concurrency suites of memory/ and api/ under ThreadSanitizer (build-tsan/, only those test files).
TSAN_TESTS = fact_db;fact_store;layer_memories;state_service;http_front;server;server_memories;vector_index;metrics
test-tsan: deps
	@cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMNEMO_SANITIZE=thread \
	  "-DMNEMO_TESTS=$(TSAN_TESTS)" >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target mnemo_tests
	@# OMP_NUM_THREADS=1: FAISS's OpenMP workers (GCC's libgomp, uninstrumented) synchronize in ways TSan
	@# cannot see, so a vector freed after a parallel region was reported as a race (docs/RELIABILITY.md).
	@# OPENBLAS_NUM_THREADS=1 for the same reason: OpenBLAS's own worker threads are uninstrumented too.
	@cd build-tsan && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=$${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1} \
	  ctest --output-on-failure -j $(JOBS) --timeout 1800
