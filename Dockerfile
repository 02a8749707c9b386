# One image for every FlexCore program, all in one multi-call binary (`flexcore`, with a
# link per program name: services/multicall); the command picks the service:
#
#   docker build -t flexcore:local .
#   docker run --rm flexcore:local flexcore-scheduler      # or flexcore-command (default),
#                                                          # flexcore-projection, flexcore-runner,
#                                                          # flexcore-gateway, flexctl
#
# Configuration: /etc/flexcore/base.yaml (a copy of config/, found through
# FLEXCORE_CONFIG_DIR), overridden by FLEXCORE__SECTION__KEY environment variables.
# The SQL migrations are embedded in the binaries (sqlx::migrate!), so the image carries
# none. Example wasm plugins: /usr/share/flexcore/plugins/<name>.wasm.
#
# Build arguments (docs/operations.md, "Containers"); the defaults are the public images,
# so a plain `docker build` compiles everything in rust:1.95-bookworm:
#   RUST_IMAGE      the builder stage's image          (rust:1.95-bookworm)
#   RUNTIME_IMAGE   the image the services run on      (debian:bookworm-slim)
#   BINARIES        source: compile in the builder stage; prebuilt: take the binaries and
#                   plugins that scripts/dist.sh left in target/dist/<profile>/ on the host
#                   (same glibc as the runtime image: build them on Debian 12)
#   DIST            with prebuilt, that directory      (target/dist/release)
# BuildKit builds only the stages the runtime stage needs, so with BINARIES=prebuilt the
# rust image is never pulled. No `# syntax=` line: BuildKit's built-in Dockerfile
# frontend reads this file, and nothing needs a frontend image from a registry.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARIES=source

############################################################################ source
FROM ${RUST_IMAGE} AS source

# Plugins are WASI command modules (plugins/build.sh builds them for this target).
RUN rustup target add wasm32-wasip1

WORKDIR /src
COPY . .

# The registry and target directories are cache mounts (kept between builds, not in any
# layer), so the artefacts are copied out to /out within the same RUN. build.sh leaves
# every module in target/plugins/<name>.wasm; misbehave and leaky exist only for the
# runner's sandbox and secret tests and are not shipped. The binary loses its debug info
# (most of its size; symbols stay, so backtraces name functions): scripts/dist.sh keeps it
# in a separate file for whoever needs it.
RUN --mount=type=cache,id=flexcore-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=flexcore-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=flexcore-target,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked -p flexcore-multicall --bin flexcore; \
    bash plugins/build.sh --locked; \
    mkdir -p /out/bin /out/plugins; \
    objcopy --strip-debug target/release/flexcore /out/bin/flexcore; \
    for program in flexcore-command flexcore-projection flexcore-scheduler flexcore-runner flexcore-gateway flexctl; do \
        ln -s flexcore "/out/bin/$program"; \
    done; \
    for wasm in target/plugins/*.wasm; do \
        case "$(basename "$wasm")" in misbehave.wasm|leaky.wasm) ;; *) install -m 0644 "$wasm" /out/plugins/ ;; esac; \
    done; \
    ls -l /out/bin /out/plugins

############################################################################ prebuilt
# The binary built on the host with its links (scripts/dist.sh: stripped, its debug info
# kept apart in target/dist-debuginfo/, never in the image) and the example plugins.
FROM scratch AS prebuilt
ARG DIST=target/dist/release
COPY ${DIST}/bin/ /out/bin/
COPY ${DIST}/plugins/ /out/plugins/

############################################################################ binaries
FROM ${BINARIES} AS binaries

############################################################################ runtime
FROM ${RUNTIME_IMAGE} AS runtime

# ca-certificates: TLS to NATS / OTLP endpoints; curl: container health checks on the
# admin port; tini: PID 1 that forwards SIGTERM and reaps the children of `process`
# plugins (the services themselves drain on SIGTERM). Package versions are not pinned:
# bookworm's security updates replace them, and pinned versions would stop building.
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl tini; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 flexcore; \
    useradd --system --uid 10001 --gid flexcore --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin flexcore

COPY --from=binaries /out/bin/ /usr/local/bin/
COPY --from=binaries /out/plugins/ /usr/share/flexcore/plugins/
COPY config/ /etc/flexcore/

# FLEXCORE_CONFIG_DIR (not a FLEXCORE__ override) names the directory holding base.yaml;
# FLEXCORE_ENV=<name> would layer /etc/flexcore/<name>.yaml on top.
ENV FLEXCORE_CONFIG_DIR=/etc/flexcore

LABEL org.opencontainers.image.title="flexcore" \
      org.opencontainers.image.description="FlexCore services (command, projection, scheduler, runner, gateway) and flexctl" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /
# The admin server (FLEXCORE__ADMIN__LISTEN=0.0.0.0:9090): /health/live, /health/ready.
EXPOSE 9090
# flexcore-gateway's HTTP API (FLEXCORE__GATEWAY__LISTEN=0.0.0.0:8080; its default is
# 127.0.0.1, unreachable from outside the container).
EXPOSE 8080

# The entrypoint stays tini; the command (docker-compose `command:`, Kubernetes `args:`)
# names the binary.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["flexcore-command"]
