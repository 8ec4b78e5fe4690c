# The newcomer's entry points. Each installs what a fresh machine lacks first.
.PHONY: deps demo fleet-demo test check check-container bench bench-quick

deps:
	@scripts/install-deps.sh

## Run the zero-setup demo: two demo apps and the proxy in front of them.
demo: deps
	cargo run --release -- demo

## The fleet tour: a local 3-member etcd, the demo apps and three instances switching as one.
fleet-demo: deps
	cargo build --release
	scripts/fleet-demo.sh

## Run every test (unit and end-to-end against real backends and the real binary).
test: deps
	cargo test

## Validate every example config.
check: deps
	cargo build --quiet
	@for f in conf/*.toml; do ./target/debug/switchyard check --config $$f || exit 1; done

## Build the container image and run it, without a Docker engine (root; debootstrap + buildah).
check-container: deps
	scripts/check-container.sh

## Benchmarks against nginx and HAProxy (issues 5 and 11): callgrind instructions and heap
## allocations per request, throughput, constant-rate latency, 1 vs 2 workers, switches,
## memory per WebSocket and per idle connection; results in benches/results/latest.md.
bench:
	benches/run.sh

## The same, short (under 2 minutes; what CI runs).
bench-quick:
	benches/run.sh --quick
