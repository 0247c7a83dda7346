#!/usr/bin/env bash
# Installs what metafuse's tests and demo need and a fresh Debian/Ubuntu
# machine lacks: redis-server (tests start private instances of it) and the
# FUSE kernel device. Safe to run again: it only installs what is missing.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

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
    # The package starts a system-wide redis on port 6379; our tests and the
    # demo start their own private instances and do not need it.
fi

if [ ! -e /dev/fuse ]; then
    echo "warning: /dev/fuse is missing; mount tests and the demo's mount need the fuse kernel module (modprobe fuse)" >&2
fi
