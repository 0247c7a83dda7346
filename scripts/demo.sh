#!/usr/bin/env bash
# The metafuse demo: a private redis-server seeded with the sample library
# (fixtures/library/sample.jsonl) and small real source files, mounted on
# ./mnt with the HTTP API on a free loopback port. Ctrl-C stops everything.
#
# Everything the demo makes lives in ./.demo (git-ignored) and ./mnt; the
# rules file .demo/config/renaming-rules.json is kept across runs so your
# edits survive.
#
# DEMO_NO_WAIT=1 runs it non-interactively: checks that the mount (or the
# API, without FUSE) shows the sample library, reads a file back, adds a
# file live and watches it appear, then cleans up. Exit status 0 = all good.
# DEMO_SERVE=1 serves the HTTP API only, as the demo does by itself when
# FUSE is not available.
#
# Expects release binaries in target/release (`just demo` builds them).
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=target/release
metafuse=$bin_dir/metafuse
metafuse_bench=$bin_dir/metafuse-bench
metafuse_stats=$bin_dir/metafuse-stats
demo_dir=.demo
mountpoint_dir=mnt
no_wait=${DEMO_NO_WAIT:-0}

for binary in "$metafuse" "$metafuse_bench" "$metafuse_stats"; do
    if [ ! -x "$binary" ]; then
        echo "demo: $binary is missing; run: cargo build --release --bin metafuse --bin metafuse-stats --bin metafuse-bench" >&2
        exit 1
    fi
done
command -v redis-server >/dev/null || { echo "demo: redis-server is missing (scripts/ensure-deps.sh installs it)" >&2; exit 1; }
command -v curl >/dev/null || { echo "demo: curl is missing" >&2; exit 1; }

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

# A loopback port nobody listens on: bash connects to it to find out.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "demo: no free loopback port found" >&2
    return 1
}

# Polls `$@` every 0.1 s until it succeeds, at most $1 seconds.
wait_for() {
    local seconds=$1
    shift
    for _ in $(seq 1 $((seconds * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

is_mounted() { mountpoint -q "$mountpoint_dir" 2>/dev/null; }

unmount() {
    if command -v fusermount3 >/dev/null; then
        fusermount3 -u "$mountpoint_dir" 2>/dev/null || fusermount3 -uz "$mountpoint_dir" 2>/dev/null || true
    else
        umount "$mountpoint_dir" 2>/dev/null || umount -l "$mountpoint_dir" 2>/dev/null || true
    fi
}

redis_pid=""
metafuse_pid=""
mode=mount
created_mountpoint=0
cleanup() {
    local status=$?
    trap - INT TERM EXIT
    if [ -n "$metafuse_pid" ] && kill -0 "$metafuse_pid" 2>/dev/null; then
        say "stopping metafuse (SIGTERM$( [ "$mode" = mount ] && echo ': clean unmount'))"
        kill -TERM "$metafuse_pid" 2>/dev/null || true
        # Bounded: a metafuse that does not stop must not hang the terminal.
        # If it is still mounted after 3 s, unmounting from outside ends its
        # FUSE session so it can still exit cleanly.
        for tick in $(seq 1 100); do
            kill -0 "$metafuse_pid" 2>/dev/null || break
            if [ "$tick" = 30 ] && is_mounted; then
                echo "demo: metafuse has not unmounted $mountpoint_dir after 3 s; unmounting it" >&2
                unmount
            fi
            sleep 0.1
        done
        if kill -0 "$metafuse_pid" 2>/dev/null; then
            echo "demo: metafuse did not stop within 10 s; killing it" >&2
            kill -KILL "$metafuse_pid" 2>/dev/null || true
        fi
        wait "$metafuse_pid" 2>/dev/null || true
    fi
    if is_mounted; then
        echo "demo: $mountpoint_dir is still mounted; unmounting it" >&2
        unmount
    fi
    if [ "$created_mountpoint" = 1 ]; then
        rmdir "$mountpoint_dir" 2>/dev/null || true
    fi
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        say "stopping redis-server"
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
# Ctrl-C is how the demo is meant to end: a clean stop, exit status 0.
trap 'exit 0' INT
trap 'exit 143' TERM

mkdir -p "$demo_dir/redis" "$demo_dir/files" "$demo_dir/config"

# --- Redis -------------------------------------------------------------------
redis_port=$(free_port)
redis_url="redis://127.0.0.1:$redis_port"
say "starting a private redis-server on 127.0.0.1:$redis_port ($demo_dir/redis)"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$demo_dir/redis" \
    --save '' --appendonly no --protected-mode no --logfile redis.log &
redis_pid=$!
wait_for 10 redis-cli -p "$redis_port" ping || { echo "demo: redis-server did not start; see $demo_dir/redis/redis.log" >&2; exit 1; }

# --- Library -------------------------------------------------------------------
say "seeding the sample library ($(grep -c . fixtures/library/sample.jsonl) files) with source files under $demo_dir/files"
"$metafuse_bench" seed-sample --redis-url "$redis_url" \
    --jsonl fixtures/library/sample.jsonl --files-root "$demo_dir/files"

rules_file="$demo_dir/config/renaming-rules.json"
if [ ! -e "$rules_file" ]; then
    cp fixtures/rules/default.json "$rules_file"
fi

# --- metafuse --------------------------------------------------------------------
api_port=$(free_port)
api_url="http://127.0.0.1:$api_port"
if [ "${DEMO_SERVE:-0}" = 1 ]; then
    mode=serve
elif [ ! -e /dev/fuse ]; then
    echo "demo: /dev/fuse is missing (modprobe fuse); serving the HTTP API only, no mount" >&2
    mode=serve
elif [ "$(id -u)" -ne 0 ] && ! command -v fusermount3 >/dev/null; then
    echo "demo: not root and no fusermount3 (apt-get install fuse3); serving the HTTP API only, no mount" >&2
    mode=serve
fi

if [ "$mode" = mount ]; then
    if is_mounted; then
        echo "demo: $mountpoint_dir is still mounted from an earlier run; unmounting it" >&2
        unmount
    fi
    if [ ! -d "$mountpoint_dir" ]; then
        mkdir "$mountpoint_dir"
        created_mountpoint=1
    fi
    if [ -n "$(ls -A "$mountpoint_dir")" ]; then
        echo "demo: $mountpoint_dir is not empty; move its content away first" >&2
        exit 1
    fi
    say "mounting the library on ./$mountpoint_dir (API on $api_url, log in $demo_dir/metafuse.log)"
    CONFIG_DIR="$demo_dir/config" "$metafuse" mount "$mountpoint_dir" --redis-url "$redis_url" \
        --files-root "$demo_dir/files" --api-listen "127.0.0.1:$api_port" \
        >"$demo_dir/metafuse.log" 2>&1 &
else
    say "serving the library's HTTP API on $api_url (log in $demo_dir/metafuse.log)"
    CONFIG_DIR="$demo_dir/config" "$metafuse" serve --redis-url "$redis_url" \
        --files-root "$demo_dir/files" --api-listen "127.0.0.1:$api_port" \
        >"$demo_dir/metafuse.log" 2>&1 &
fi
metafuse_pid=$!

api_ready() {
    kill -0 "$metafuse_pid" 2>/dev/null || return 2
    curl -sf "$api_url/api/fuse/health" | grep -q '"status":"ok"'
}
ready=0
for _ in $(seq 1 300); do
    if api_ready; then
        ready=1
        break
    elif ! kill -0 "$metafuse_pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ "$ready" != 1 ] || { [ "$mode" = mount ] && ! wait_for 10 is_mounted; }; then
    echo "demo: metafuse did not become ready; the end of $demo_dir/metafuse.log:" >&2
    tail -n 20 "$demo_dir/metafuse.log" >&2
    exit 1
fi

# --- What to try -------------------------------------------------------------------
live_hash=demo0000000000000000000000000001
print_guide() {
    cat <<EOF

metafuse is running: $( [ "$mode" = mount ] && echo "the library is mounted on ./$mountpoint_dir, " )API on $api_url

Try, in another terminal (from $(pwd)):
EOF
    if [ "$mode" = mount ]; then
        cat <<EOF
  ls -R $mountpoint_dir
  cat "$mountpoint_dir/Movies/Heat (1995)/Heat (1995).mkv" | head
EOF
    fi
    cat <<EOF
  curl -s localhost:$api_port/api/fuse/stats
  $metafuse_stats --api $api_url
  $metafuse_stats --redis-url $redis_url --list      # the paths, computed offline

Watch files move:
  edit $rules_file (it is watched), or switch to the Plex preset:
  curl -s -X PUT localhost:$api_port/api/fuse/rules -H 'content-type: application/json' --data @fixtures/rules/plex.json

Add a file live (an event names each changed key; the value is read from Redis):
  : > $demo_dir/files/watch/Arrival.2016.mkv
  for kv in filePath=watch/Arrival.2016.mkv title=Arrival movieYear=2016 extension=mkv fileType=video size=0; do
    redis-cli -p $redis_port SET "file:$live_hash/\${kv%%=*}" "\${kv#*=}" >/dev/null
    redis-cli -p $redis_port XADD meta:events '*' type set key "file:$live_hash/\${kv%%=*}" ts 0 >/dev/null
  done
  $( [ "$mode" = mount ] && echo "ls \"$mountpoint_dir/Movies/Arrival (2016)\"" || echo "curl -s localhost:$api_port/api/fuse/files" )

Press Ctrl-C to stop (unmounts, stops redis; .demo/ keeps your rules file).
EOF
}

add_live_file() {
    local kv
    : >"$demo_dir/files/watch/Arrival.2016.mkv"
    for kv in filePath=watch/Arrival.2016.mkv title=Arrival movieYear=2016 extension=mkv fileType=video size=0; do
        redis-cli -p "$redis_port" SET "file:$live_hash/${kv%%=*}" "${kv#*=}" >/dev/null
        redis-cli -p "$redis_port" XADD meta:events '*' type set key "file:$live_hash/${kv%%=*}" ts 0 >/dev/null
    done
}

# The non-interactive check: what the README promises, verified.
check_demo() {
    local failures=0
    local expected_top="Images Movies TV Shows Unsorted"
    local heat="Movies/Heat (1995)/Heat (1995).mkv"
    local top
    if [ "$mode" = mount ]; then
        top=$(ls "$mountpoint_dir" | tr '\n' ' ' | sed 's/ $//')
        [ "$top" = "$expected_top" ] || { echo "check: ls $mountpoint_dir gave '$top', expected '$expected_top'" >&2; failures=$((failures + 1)); }
        local first_lines
        first_lines=$(head -n 2 "$mountpoint_dir/$heat" || true)
        [[ "$first_lines" == *$'\nfilePath: watch/Heat.1995.2160p.mkv' ]] \
            || { echo "check: $mountpoint_dir/$heat did not read back its source" >&2; failures=$((failures + 1)); }
        cmp -s "$mountpoint_dir/$heat" "$demo_dir/files/watch/Heat.1995.2160p.mkv" \
            || { echo "check: $mountpoint_dir/$heat differs from its source file" >&2; failures=$((failures + 1)); }
        add_live_file
        wait_for 10 test -e "$mountpoint_dir/Movies/Arrival (2016)/Arrival (2016).mkv" \
            || { echo "check: a file added live did not appear in $mountpoint_dir" >&2; failures=$((failures + 1)); }
    else
        top=$(curl -sf -X POST "$api_url/api/fuse/readdir" -H 'content-type: application/json' -d '{"path":"/"}')
        [ "$top" = '{"entries":["Images","Movies","TV Shows","Unsorted"]}' ] \
            || { echo "check: readdir / gave '$top'" >&2; failures=$((failures + 1)); }
        curl -sf -X POST "$api_url/api/fuse/read" -H 'content-type: application/json' -d "{\"path\":\"/$heat\"}" | grep -q 'Heat.1995.2160p.mkv' \
            || { echo "check: /api/fuse/read of $heat did not name its source" >&2; failures=$((failures + 1)); }
        add_live_file
        wait_for 10 sh -c "curl -sf -X POST '$api_url/api/fuse/exists' -d '{\"path\":\"/Movies/Arrival (2016)/Arrival (2016).mkv\"}' | grep -q true" \
            || { echo "check: a file added live did not appear in the API" >&2; failures=$((failures + 1)); }
    fi
    local table
    table=$("$metafuse_stats" --api "$api_url" || true)
    [[ "$table" == *"files               25"* ]] \
        || { echo "check: metafuse-stats --api did not report 25 files" >&2; failures=$((failures + 1)); }
    if [ "$failures" -ne 0 ]; then
        echo "demo check: $failures failure(s); see $demo_dir/metafuse.log" >&2
        return 1
    fi
    say "demo check passed ($mode): sample library listed, a file read back, a live addition shown"
}

if [ "$no_wait" = 1 ]; then
    check_demo
    exit $?
fi

"$metafuse_stats" --api "$api_url"
print_guide
# `wait` returns when metafuse exits on its own, or when Ctrl-C interrupts it
# (the INT trap then exits, and the EXIT trap cleans up).
wait "$metafuse_pid" || true
metafuse_pid=""
echo "demo: metafuse exited; the end of $demo_dir/metafuse.log:" >&2
tail -n 20 "$demo_dir/metafuse.log" >&2
exit 1
