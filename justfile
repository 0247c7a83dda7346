# metafuse — common tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the recipes.
default:
    @just --list

# Mount the sample library on ./mnt (private redis, API on a free port); Ctrl-C stops it.
demo:
    scripts/ensure-deps.sh
    cargo build --release --quiet --bin metafuse --bin metafuse-stats --bin metafuse-bench
    scripts/demo.sh

# The demo, non-interactively: checks the mount lists and reads the sample library, then cleans up.
demo-check:
    scripts/ensure-deps.sh
    cargo build --release --quiet --bin metafuse --bin metafuse-stats --bin metafuse-bench
    DEMO_NO_WAIT=1 scripts/demo.sh

# Every test of the workspace, the tidy test among them (starts private redis-servers; FUSE tests need root and /dev/fuse, and skip saying so without).
test:
    scripts/ensure-deps.sh
    cargo test --workspace --all-targets --no-fail-fast
    cargo test --workspace --doc

# Criterion benchmarks (rules, projection, replay, ...).
bench:
    scripts/ensure-deps.sh
    cargo bench -p metafuse-benches

# End-to-end mount figures (root, /dev/fuse): private redis with `files` files; find, XADD-to-stat latency, 1 GiB reads.
bench-e2e files="100000":
    scripts/ensure-deps.sh
    cargo build --release --quiet --bin metafuse-bench
    target/release/metafuse-bench mount --files {{files}}

# Formatting and clippy, as CI expects them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# API docs of every crate; a broken link or missing doc fails.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# The conventions no compiler checks: pure core crates, code map = crates, packageable manifests.
tidy:
    cargo test -p metafuse-testkit --test tidy

# Every library crate packages, and the core crates build from their packages alone.
package-check:
    scripts/package-check.sh
    scripts/docker-build-check.sh

# What CI runs (.ci/run): lint, doc, every test (unit, integration, doc, tidy), packaging, the Dockerfile's build steps. METAFUSE_REQUIRE_FUSE=1: FUSE tests fail rather than skip.
ci:
    scripts/ensure-deps.sh
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
    cargo test --workspace --all-targets --no-fail-fast
    cargo test --workspace --doc
    scripts/package-check.sh
    scripts/docker-build-check.sh

# Format the code.
fmt:
    cargo fmt --all
