# metafuse — common tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the recipes.
default:
    @just --list

# Run the sample library through the default rules and show the virtual tree.
demo:
    scripts/ensure-deps.sh
    cargo build --release --quiet --bin metafuse
    scripts/demo.sh

# Every test of the workspace (starts private redis-servers; FUSE tests need root and /dev/fuse).
test:
    scripts/ensure-deps.sh
    cargo test --workspace --all-targets --no-fail-fast
    cargo test --workspace --doc

# Criterion benchmarks (rules, projection, replay, ...).
bench:
    scripts/ensure-deps.sh
    cargo bench -p metafuse-benches

# Formatting and clippy, as CI expects them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all
