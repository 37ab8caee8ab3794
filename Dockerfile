# grantdoctor: multi-stage build, a stripped binary on a small non-root runtime image.
#
#   docker build -t grantdoctor --build-arg GRANTDOCTOR_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" .
#
# The runtime layout (the README's "Docker" section runs it end to end; tests/deploy.rs runs
# the binary as uid 10001 against the same paths and variables, without Docker):
#   /usr/local/bin/grantdoctor   the binary
#   /etc/grantdoctor/            configuration (grantdoctor.toml, mounted read-only if used)
#   /etc/grantdoctor/certs/      the CA: created on first start, or mounted (a volume, a Secret)
#   /var/lib/grantdoctor/        the data directory: fingerprint key and ledger (a volume)
# Both directories are owned by 10001, so the image runs with a read-only root file system.

FROM rust:1.95-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Dependencies first, in a layer of their own that is rebuilt only when Cargo.toml or
# Cargo.lock change: the manifest with stub sources (and a stub for every bench it names).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && sed -n '/^\[\[bench\]\]/,/^name/s/^name *= *"\(.*\)"/\1/p' Cargo.toml \
    | while read -r bench; do echo 'fn main() {}' > "benches/${bench}.rs"; done \
 && cargo build --release --locked --bin grantdoctor \
 && rm -rf src benches

# Then the real sources. COPY keeps the files' own times, which can be older than the stub
# build's outputs: touch them so cargo rebuilds the crate itself.
# The context has no .git: build.rs takes the commit for `--version` from this argument
# (`--build-arg GRANTDOCTOR_GIT_COMMIT=$(git rev-parse --short=12 HEAD)`). Declared after the
# dependency layer, so a new commit does not rebuild the dependencies.
ARG GRANTDOCTOR_GIT_COMMIT=unknown
COPY build.rs ./
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin grantdoctor \
 && objcopy --strip-all target/release/grantdoctor /grantdoctor \
 && /grantdoctor --version

FROM debian:bookworm-slim
# Only the CA certificates (the system roots that bundle.pem starts with). bash, already in
# the base image, runs the Kubernetes exec probes (deploy/kubernetes/sidecar.yaml).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 grantdoctor \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/grantdoctor --shell /usr/sbin/nologin grantdoctor \
 && install -d -o 10001 -g 10001 -m 0750 /etc/grantdoctor /etc/grantdoctor/certs \
      /var/lib/grantdoctor
COPY --from=build /grantdoctor /usr/local/bin/grantdoctor

# The listener is on all addresses inside the container so `docker run -p` reaches it; a
# non-loopback listener needs GRANTDOCTOR_PROXY_AUTH or GRANTDOCTOR_ALLOW_CLIENTS, and the
# proxy refuses to start without one. The admin port (its /events names orgs, users and client
# ids) is published by `docker run -p 127.0.0.1:9090:9090` only on the host's loopback;
# the Kubernetes sidecar binds it to 127.0.0.1 instead.
ENV GRANTDOCTOR_LISTEN=0.0.0.0:8080 \
    GRANTDOCTOR_ADMIN=0.0.0.0:9090 \
    GRANTDOCTOR_CA_DIR=/etc/grantdoctor/certs \
    GRANTDOCTOR_DATA_DIR=/var/lib/grantdoctor \
    GRANTDOCTOR_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/grantdoctor
VOLUME ["/etc/grantdoctor/certs", "/var/lib/grantdoctor"]
EXPOSE 8080 9090
# SIGTERM drains in-flight requests (--drain-timeout, 20 s): give `docker stop` -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/grantdoctor"]
CMD ["run"]
