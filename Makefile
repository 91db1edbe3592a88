# spoa-host — build, run, test, benchmark.
#
#   make run       build the guest and the host (release), start the agent on :12345
#   make test      build everything the tests need, then run every test
#   make examples  build the example guests (Rust, Python, JavaScript)
#   make bench     run the SPOP load generator against the agent (see BENCHMARKS.md)

CARGO        ?= cargo
WASM_TARGET  := wasm32-unknown-unknown
WASM_OUT     := target/$(WASM_TARGET)/release
COMPONENTIZE := target/release/componentize
FIXTURES     := target/fixtures
PORT         ?= 12345
AGENT_ARGS   ?=

CARGO_DEB    := target/tools/bin/cargo-deb
CARGO_DEB_VERSION := 3.8.0
# The C guests' tools (published crates), pinned: wit-bindgen's C generator
# and wasm-tools, the versions of the wit-bindgen and wasm-tools crates the
# host and the Rust SDK build with.
WIT_BINDGEN  := target/tools/bin/wit-bindgen
WIT_BINDGEN_VERSION := 0.46.0
WASM_TOOLS   := target/tools/bin/wasm-tools
WASM_TOOLS_VERSION := 1.239.0
# For a C guest that imports WASI preview 1 (stdio): from the
# wasi-preview1-component-adapter-provider crate, written by componentize.
WASI_ADAPTER := target/tools/wasi_snapshot_preview1.reactor.wasm

EXAMPLES     := target/examples
EXAMPLE_RUST := examples/guests/rust/target/wasm32-wasip2/release/iprep_rust.wasm

.PHONY: all setup build guest fixtures host run test test-deps examples c-tools deb lint fmt bench fuzz clean

all: build

## Installs the wasm targets the guests are built for, if they are missing.
setup:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

$(COMPONENTIZE): componentize/src/main.rs componentize/Cargo.toml
	$(CARGO) build --release -p componentize

## The IP-reputation guest as a component: target/guest_iprep.wasm, the
## User-Agent guest of the several-guests example: target/guest_uascore.wasm,
## and the rate-limit guest (shared state): target/guest_ratelimit.wasm
guest: setup $(COMPONENTIZE)
	$(CARGO) build --release --target $(WASM_TARGET) -p guest-iprep -p guest-uascore -p guest-ratelimit
	$(COMPONENTIZE) $(WASM_OUT)/guest_iprep.wasm target/guest_iprep.wasm
	$(COMPONENTIZE) $(WASM_OUT)/guest_uascore.wasm target/guest_uascore.wasm
	$(COMPONENTIZE) $(WASM_OUT)/guest_ratelimit.wasm target/guest_ratelimit.wasm

## Test guests: the hostile guest, built as versions A, B and C (and A
## and guest-iprep with `cargo build --target wasm32-wasip2`), the
## Python sandbox probe (componentize-py, as the Python example), and a
## JavaScript guest of the shared store (componentize-js, as the JS example).
fixtures: setup $(COMPONENTIZE)
	@mkdir -p $(FIXTURES)
	SPOA_FIXTURE_VERSION=A $(CARGO) build --release --target $(WASM_TARGET) -p guest-hostile
	$(COMPONENTIZE) $(WASM_OUT)/guest_hostile.wasm $(FIXTURES)/guest_hostile_a.wasm
	SPOA_FIXTURE_VERSION=B $(CARGO) build --release --target $(WASM_TARGET) -p guest-hostile
	$(COMPONENTIZE) $(WASM_OUT)/guest_hostile.wasm $(FIXTURES)/guest_hostile_b.wasm
	SPOA_FIXTURE_VERSION=C $(CARGO) build --release --target $(WASM_TARGET) -p guest-hostile
	$(COMPONENTIZE) $(WASM_OUT)/guest_hostile.wasm $(FIXTURES)/guest_hostile_c.wasm
	$(CARGO) build --release --target $(WASM_TARGET) -p guest-tables
	$(COMPONENTIZE) $(WASM_OUT)/guest_tables.wasm $(FIXTURES)/guest_tables.wasm
	$(CARGO) build --release --target $(WASM_TARGET) -p guest-batch
	$(COMPONENTIZE) $(WASM_OUT)/guest_batch.wasm $(FIXTURES)/guest_batch.wasm
	$(CARGO) build --release --target wasm32-wasip2 -p guest-iprep
	cp target/wasm32-wasip2/release/guest_iprep.wasm $(FIXTURES)/guest_iprep_wasip2.wasm
	SPOA_FIXTURE_VERSION=A $(CARGO) build --release --target wasm32-wasip2 -p guest-hostile
	cp target/wasm32-wasip2/release/guest_hostile.wasm $(FIXTURES)/guest_hostile_wasip2.wasm
	tests/fixtures/guest-sandbox-py/build.sh
	tests/fixtures/guest-kv-js/build.sh

host:
	$(CARGO) build --release -p spoa-host

build: guest host

## Starts the agent with the IP-reputation guest on port $(PORT).
run: build
	./target/release/spoa-host --module target/guest_iprep.wasm -p $(PORT) $(AGENT_ARGS)

## The example guests, each built with its language's own toolchain:
## target/examples/iprep_{rust,python,js,c}.wasm
examples: setup c-tools
	cd examples/guests/rust && $(CARGO) build --release
	@mkdir -p $(EXAMPLES) && cp $(EXAMPLE_RUST) $(EXAMPLES)/iprep_rust.wasm
	examples/guests/python/build.sh
	examples/guests/javascript/build.sh
	examples/guests/c/build.sh

## wit-bindgen (its C generator only), wasm-tools and the WASI preview 1
## adapter for C guests, into target/tools (clang and wasi-libc come from
## Debian: make test-deps).
c-tools: $(WIT_BINDGEN) $(WASM_TOOLS) $(WASI_ADAPTER)

$(WASI_ADAPTER): $(COMPONENTIZE)
	@mkdir -p $(dir $@)
	$(COMPONENTIZE) --wasi-adapter $@

$(WIT_BINDGEN):
	$(CARGO) install wit-bindgen-cli --locked --version $(WIT_BINDGEN_VERSION) --no-default-features --features c --root target/tools

$(WASM_TOOLS):
	$(CARGO) install wasm-tools --locked --version $(WASM_TOOLS_VERSION) --no-default-features --features component,print,validate --root target/tools

## The Debian package: target/debian/spoa-host_VERSION_amd64.deb (cargo-deb,
## installed into target/tools when missing). Its contents: `dpkg -c`.
deb: build $(CARGO_DEB)
	$(CARGO_DEB) -p spoa-host --no-build --strip --output target/debian/

$(CARGO_DEB):
	$(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION) --root target/tools

## HAProxy and the example toolchains, installed when missing (apt-get).
test-deps:
	@scripts/test-deps.sh

## Every test: codec and unit tests, guest logic (native), SPOP over TCP,
## hostile peers and guests, hot reload, the example guests, and end to end
## with a real HAProxy: the system's (Debian 12: 2.6), then every end-to-end
## test again on HAProxy 3.x (built once into target/haproxy3/ by
## scripts/haproxy3.sh; HAPROXY3_BIN overrides it). Every test binary runs
## even when one fails.
test: test-deps guest fixtures examples host deb
	status=0; \
	$(CARGO) test --release --workspace --exclude guest-hostile --exclude guest-tables --exclude guest-batch --no-fail-fast || status=1; \
	CARGO=$(CARGO) scripts/test-haproxy3.sh || status=1; \
	exit $$status

## Load generator figures for BENCHMARKS.md (DURATION=10s by default;
## ONLY=tables, languages, deploys or agents runs that section alone).
bench: guest
	$(CARGO) build --release --target $(WASM_TARGET) -p guest-tables
	@mkdir -p $(FIXTURES) && $(COMPONENTIZE) $(WASM_OUT)/guest_tables.wasm $(FIXTURES)/guest_tables.wasm
	$(CARGO) build --release --target $(WASM_TARGET) -p guest-batch
	$(COMPONENTIZE) $(WASM_OUT)/guest_batch.wasm $(FIXTURES)/guest_batch.wasm
	$(CARGO) build --release --target wasm32-wasip2 -p guest-iprep
	cp target/wasm32-wasip2/release/guest_iprep.wasm $(FIXTURES)/guest_iprep_wasip2.wasm
	$(CARGO) build --release -p spoa-bench --features spoa-bench/native
	$(CARGO) build --release -p spoa-host --features native-iprep
	./bench/run.sh

## Fuzzes the SPOP decoder (needs a nightly toolchain and cargo-fuzz).
FUZZ_RUNS ?= 5000000
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(CARGO) +nightly fuzz run decode_stream -- -runs=$(FUZZ_RUNS) -max_len=2048

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --workspace --exclude guest-hostile --exclude guest-tables --exclude guest-batch -- -D warnings
	$(CARGO) clippy -p guest-hostile -p guest-tables -p guest-batch -p guest-iprep -p guest-uascore -p guest-ratelimit -p spoa-guest --target $(WASM_TARGET) -- -D warnings
	cd examples/guests/rust && $(CARGO) fmt --check && $(CARGO) clippy -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
