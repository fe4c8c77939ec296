# The front door. `make demo` and `make check` each install what they need,
# configure, build, and run. See README.md.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLINGSHOT_WERROR=ON

.PHONY: all deps build check demo bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# The default suite: every test but the heavy ones (nested appliance, long
# benchmarks), which have their own targets.
check: build
	cd $(BUILD) && ctest -LE 'nested|long' --output-on-failure -j$(JOBS)

demo: build
	scripts/demo.sh $(BUILD)

# The full store benchmark (1 GiB); prints a RESULT line.
bench: build
	$(BUILD)/bench/store_bench

clean:
	rm -rf $(BUILD)
