# metafuse image: a release build, then a small Debian runtime with fuse3.
# `scripts/docker-build-check.sh` runs this file's build stage (its COPY and
# RUN lines) on the build machine, so CI exercises the same steps.

# ---- build: the same cargo command as CI's release builds --------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY bins bins
COPY benches benches
COPY fixtures fixtures
RUN cargo build --release --locked -p metafuse -p metafuse-stats

# ---- runtime ------------------------------------------------------------------
FROM debian:bookworm-slim
# fuse3: fusermount3 and /etc/fuse.conf for the mount; curl: the health check.
# Versions are not pinned: bookworm's point releases replace them, and a
# pinned version that left the archive breaks the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /mnt/metafuse /meta-core /files /config
COPY --from=build /src/target/release/metafuse /src/target/release/metafuse-stats /usr/local/bin/
# The reference deployment's layout: meta-core's volume, the media files, the
# rules and settings; the API listens on all interfaces inside the container.
ENV META_CORE_PATH=/meta-core \
    FILES_VOLUME=/files \
    CONFIG_DIR=/config \
    API_HOST=0.0.0.0 \
    API_PORT=3000
# Root, deliberately: mounting needs /dev/fuse and CAP_SYS_ADMIN. Files in
# the mount are owned by PUID/PGID, not by root.
# hadolint ignore=DL3002
USER 0
EXPOSE 3000
# Ready means the tree is served; the bootstrap may take a while on a large
# library, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5m --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS \"http://127.0.0.1:${API_PORT}/readyz\" || exit 1"]
# SIGTERM: metafuse stops the API, unmounts cleanly and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/metafuse"]
CMD ["mount", "--allow-other", "/mnt/metafuse"]
