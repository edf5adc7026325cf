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
.PHONY: fuzz
fuzz: deps
	@FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) JOBS=$(JOBS) bash fuzz/run.sh
