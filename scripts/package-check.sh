#!/usr/bin/env bash
# Packages every library crate (crates/*) as `cargo package` would for
# crates.io, then builds the packaged core crates (rules, state, vfs) from
# their .crate files alone, in a scratch workspace: a file reached outside
# a package (an `include_str!("../../../fixtures/...")`) fails here.
#
# Offline: `--no-verify --exclude-lockfile` because our crates are not on
# crates.io (and `publish = false` keeps cargo from overlaying them), so the
# scratch workspace points each one at its unpacked package instead.
set -euo pipefail
cd "$(dirname "$0")/.."

root=$PWD
packages=$root/target/package
core_crates=(metafuse-rules metafuse-state metafuse-vfs)

library_crates=()
for manifest in crates/*/Cargo.toml; do
    library_crates+=("$(basename "$(dirname "$manifest")")")
done

for crate in "${library_crates[@]}"; do
    cargo package --quiet -p "$crate" --no-verify --allow-dirty --offline --exclude-lockfile
done
echo "packaged: ${library_crates[*]}"

scratch=$root/target/package-check
rm -rf "$scratch/unpacked"
mkdir -p "$scratch/unpacked"
patches=""
members=""
for crate in "${library_crates[@]}"; do
    # -m: packaged files carry a fixed old mtime; cargo must see them as new.
    tar -xzmf "$packages/$crate-0.1.0.crate" -C "$scratch/unpacked"
    patches+="$crate = { path = \"unpacked/$crate-0.1.0\" }"$'\n'
done
for crate in "${core_crates[@]}"; do
    members+="\"unpacked/$crate-0.1.0\", "
done
cat >"$scratch/Cargo.toml" <<TOML
[workspace]
resolver = "3"
members = [$members]

[patch.crates-io]
$patches
TOML
# The same third-party versions as the workspace, so nothing new is needed.
cp "$root/Cargo.lock" "$scratch/Cargo.lock"
# The workspace's target directory: third-party crates are built already,
# and the unpacked crates are other packages (other paths), so nothing of the
# workspace's own build is replaced.
(cd "$scratch" && cargo build --quiet --offline --workspace --lib --target-dir "$root/target")
echo "built from their packages alone: ${core_crates[*]}"
