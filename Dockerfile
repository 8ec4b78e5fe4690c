# switchyard container image.
#
# NOT BUILT OR TESTED HERE: the development machines and CI have no Docker engine, so this file
# has never been built by the project's own checks. Its build steps are deliberately the same as
# a build by hand on Debian bookworm (and as scripts/install-deps.sh + the README):
#     apt-get install cmake            # pingora's zlib-ng build needs it
#     cargo build --release --locked
# If you change how switchyard is built, change it here too.
#
#   docker build -t switchyard .
#   docker run --rm -p 8000:8000 --init --stop-timeout 45 \
#       -v /path/to/switchyard.toml:/etc/switchyard/switchyard.toml:ro switchyard
# (no config is baked in; conf/compose.yaml runs it with conf/compose/switchyard.toml)
#
# Admin commands run inside the container: docker exec CONTAINER switchyard ctl status
# The container must get more than [shutdown] timeout (30 s) to stop: docker stop -t 45,
# or stop_grace_period: 45s in compose (Docker's default of 10 s cuts open requests).

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
# A fixed UID/GID so that volumes and bind mounts can be given to it from the host.
RUN groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid switchyard --no-create-home \
        --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
 && install -d -o switchyard -g switchyard -m 0750 \
        /etc/switchyard /var/lib/switchyard /run/switchyard
COPY --from=builder /src/target/release/switchyard /usr/local/bin/switchyard

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
