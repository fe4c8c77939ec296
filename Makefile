# The front door. `make demo` and `make check` each install what they need,
# configure, build, and run. See README.md.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLINGSHOT_WERROR=ON

.PHONY: all deps build check fault soak demo bench nested debs appliance reproducible sanitize tsan analyze fuzz clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# The default suite: every test but the heavy ones (nested appliance, long
# benchmarks), which have their own targets.
check: build
	cd $(BUILD) && ctest -LE 'nested|long|fault|soak' --output-on-failure -j$(JOBS)

# The fault campaign (tests/e2e: random kill -9 of proxy, home and surrogate
# while typing; FAULT_TRIALS of them), in the e2e world.
FAULT_TRIALS ?= 30
fault: build
	cd $(BUILD) && SLINGSHOT_FAULT_TRIALS=$(FAULT_TRIALS) ctest -L fault -V

# The soak: SOAK_SECONDS of typing and pointer motion with a surrogate
# killed every few minutes (bench/soak_bench runs it too).
SOAK_SECONDS ?= 3600
soak: build
	bench/soak_bench $(BUILD) $(SOAK_SECONDS)

demo: build
	scripts/demo.sh $(BUILD)

# The full benchmarks: the store on 1 GiB, checkpoints of a real VM, disks
# on demand, replication, then the paper's experiment (bench/paper: both
# network profiles; writes bench/out/report.md and bench/out/plot.png; needs
# root). Each prints a RESULT line; the paper's is the last.
bench: build
	scripts/install-deps.sh gnuplot-nox python3 debootstrap e2fsprogs
	$(BUILD)/bench/store_bench
	$(BUILD)/bench/vm_bench
	$(BUILD)/bench/disk_bench
	$(BUILD)/bench/replication_bench
	$(BUILD)/bench/link_bench
	bench/paper/run.sh $(BUILD) bench/out

# The .debs of slingshot-home, slingshot-client and slingshot-agent
# (image-build/debian; dpkg-buildpackage, lintian) into $(BUILD)/debs, then
# a clean bookworm chroot installs the home's and runs it.
DEBS_TOOLS = debhelper dpkg-dev lintian help2man fakeroot git debootstrap
APPLIANCE_TOOLS = debootstrap squashfs-tools xorriso grub-pc-bin grub-efi-amd64-bin grub-common mtools faketime

debs: deps
	scripts/install-deps.sh $(DEBS_TOOLS)
	image-build/debs.sh $(BUILD)/debs
	tests/packages/install_test.sh $(BUILD)/debs $(wildcard $(BUILD)/guest)

# The surrogate appliance ISO (image-build/appliance.sh): Xen, a read-only
# dom0 and the agent's .deb, into $(BUILD)/appliance.
appliance: debs
	scripts/install-deps.sh $(APPLIANCE_TOOLS)
	image-build/appliance.sh $(BUILD)/appliance $(BUILD)/debs

# Builds the .debs and the ISO a second time and compares them with those
# of make appliance (run that first; CI's make nested does); diffoscope
# explains any difference.
reproducible: deps
	scripts/install-deps.sh $(DEBS_TOOLS) $(APPLIANCE_TOOLS) diffoscope-minimal
	image-build/reproducible.sh $(BUILD)

# Xen nested under QEMU TCG: the Xen backend run in its dom0 (the first run
# debootstraps a dom0 root into $(BUILD)/nested), then the appliance ISO
# booted on a test LAN (see tests/nested/).
nested: build appliance
	scripts/install-deps.sh debootstrap dnsmasq-base ovmf
	cd $(BUILD) && ctest -L nested --output-on-failure

# The default suite under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize: deps
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DSLINGSHOT_WERROR=ON \
	  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
	cmake --build $(BUILD)-asan -j$(JOBS)
	cd $(BUILD)-asan && LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp print_suppressions=0" \
	  ctest -LE 'nested|long|bench|e2e|net|fault|soak' --output-on-failure -j$(JOBS)

# The unit tests and the concurrent network tests (TLS transport, chunk
# service, fetch chain, pairing) under ThreadSanitizer. -Wno-tsan: Boost.Asio uses
# atomic_thread_fence, which TSan does not model (GCC warns about it).
tsan: deps
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=Debug -DSLINGSHOT_WERROR=ON -DCMAKE_CXX_FLAGS="-fsanitize=thread -Wno-tsan"
	cmake --build $(BUILD)-tsan -j$(JOBS) --target slingshot_unit_tests slingshot_nbd_tests
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" $(BUILD)-tsan/tests/unit/slingshot_unit_tests
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tests/tsan.supp" $(BUILD)-tsan/tests/nbd/slingshot_nbd_tests \
	  --gtest_filter='FetchTest.*:Pairing*'

# Builds with clang's -Wthread-safety as an error: every GUARDED_BY member
# and REQUIRES method (core/base/include/slingshot/base/mutex.h) is checked.
analyze:
	@scripts/install-deps.sh clang
	CXX=clang++ cmake -S . -B $(BUILD)-clang -DSLINGSHOT_WERROR=ON -DCMAKE_CXX_FLAGS="-Wthread-safety"
	cmake --build $(BUILD)-clang -j$(JOBS)

# libFuzzer on every parser of untrusted bytes, FUZZ_SECONDS per target,
# starting from a corpus of real objects (kept in $(BUILD)-fuzz/corpus).
FUZZ_SECONDS ?= 60
# Leaks are checked as in make sanitize: Berkeley DB's own block is the one
# suppressed (tests/lsan.supp says why).
FUZZ_ENV = LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp print_suppressions=0"
fuzz:
	@scripts/install-deps.sh clang libclang-rt-14-dev
	CXX=clang++ cmake -S . -B $(BUILD)-fuzz -DSLINGSHOT_FUZZ=ON -DSLINGSHOT_BUILD_BENCH=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined,fuzzer-no-link"
	cmake --build $(BUILD)-fuzz -j$(JOBS) --target fuzz_decoders fuzz_files fuzz_nbd make_seeds
	$(BUILD)-fuzz/tests/fuzz/make_seeds $(BUILD)-fuzz/corpus
	$(FUZZ_ENV) $(BUILD)-fuzz/tests/fuzz/fuzz_decoders -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	  $(BUILD)-fuzz/corpus/decoders
	$(FUZZ_ENV) $(BUILD)-fuzz/tests/fuzz/fuzz_files -max_total_time=$(FUZZ_SECONDS) -max_len=262144 \
	  $(BUILD)-fuzz/corpus/files
	$(FUZZ_ENV) $(BUILD)-fuzz/tests/fuzz/fuzz_nbd -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	  $(BUILD)-fuzz/corpus/nbd

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-clang $(BUILD)-fuzz
