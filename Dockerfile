# switchyard container image.
#
#   docker build -t switchyard .
#   docker run --rm -p 8000:8000 --init --stop-timeout 45 \
#       -v /path/to/switchyard.toml:/etc/switchyard/switchyard.toml:ro switchyard
# (no config is baked in; conf/compose.yaml runs it with conf/compose/switchyard.toml)
#
# Admin commands run inside the container: docker exec CONTAINER switchyard ctl status
# The container must get more than [shutdown] timeout (30 s) to stop: docker stop -t 45,
# or stop_grace_period: 45s in compose (Docker's default of 10 s cuts open requests).
#
# Two ways to build, one runtime image:
# - `docker build .` (the last stage) does the whole build, as by hand on Debian bookworm
#   (and as scripts/install-deps.sh + the README): apt-get install cmake (pingora's zlib-ng
#   needs it), cargo build --release --locked, then the debug info is stripped (the release
#   profile keeps it for benches/profile.sh; symbols stay, for backtraces).
# - `--target prebuilt` wraps a binary built outside, at target/container/switchyard. This is
#   what CI builds and runs (scripts/check-container.sh, called by .ci/run), with no Docker
#   engine: the release binary of the same CI run, `objcopy --strip-debug`ed to that path;
#   debian:bookworm-slim made locally with debootstrap; `buildah build --format docker
#   --target prebuilt` (Docker format keeps HEALTHCHECK and STOPSIGNAL). The script then checks
#   the image's user, volumes, ports, HEALTHCHECK, STOPSIGNAL and size, and runs it: `check`,
#   `run` in front of two demo apps, the HEALTHCHECK command, a switch, SIGTERM.
#   Builders skip the stages a target does not need (BuildKit, buildah, podman), so neither
#   build touches the other's stages. Not covered by CI: the builder stage below (rust:1-bookworm
#   cannot be pulled there) and conf/compose.yaml with a real Docker engine.
# If you change how switchyard is built, change it in the builder stage too.

# The runtime image, without the binary: everything both builds share.
FROM debian:bookworm-slim AS runtime
# A fixed UID/GID so that volumes and bind mounts can be given to it from the host.
RUN groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid switchyard --no-create-home \
        --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
 && install -d -o switchyard -g switchyard -m 0750 \
        /etc/switchyard /var/lib/switchyard /run/switchyard
# /etc/switchyard: the config (mount switchyard.toml here, read-only is fine).
# /var/lib/switchyard: the state file, so the active color survives a new container.
# /run/switchyard: the admin socket (mode 0600, only this user can switch) and upgrade socket.
VOLUME ["/etc/switchyard", "/var/lib/switchyard", "/run/switchyard"]
USER switchyard
# 8000: the front door ([listen] http). 9000: /metrics ([admin] metrics; set it to
# "0.0.0.0:9000" in the config for Prometheus to reach it from outside the container).
EXPOSE 8000 9000
# Liveness of the proxy itself (admin socket answers), not of the apps behind it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["switchyard", "ctl", "--socket", "/run/switchyard/admin.sock", "status"]
# SIGTERM: stop accepting, finish open requests, hand WebSockets over (1012), exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard"]
CMD ["run", "--config", "/etc/switchyard/switchyard.toml"]

# CI: a binary built outside (.dockerignore lets only this file of target/ into the context).
FROM runtime AS prebuilt
COPY target/container/switchyard /usr/local/bin/switchyard

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && objcopy --strip-debug target/release/switchyard

# The default: the whole build.
FROM runtime
COPY --from=builder /src/target/release/switchyard /usr/local/bin/switchyard
