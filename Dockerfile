# grantdoctor: multi-stage build, small non-root runtime image.
# Untested on the project's machines (no Docker engine there); kept simple and read-checked.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin grantdoctor

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/grantdoctor --create-home grantdoctor
COPY --from=build /src/target/release/grantdoctor /usr/local/bin/grantdoctor
USER 10001
WORKDIR /var/lib/grantdoctor
ENV GRANTDOCTOR_LISTEN=0.0.0.0:8080 \
    GRANTDOCTOR_ADMIN=0.0.0.0:9090 \
    GRANTDOCTOR_CA_DIR=/etc/grantdoctor/certs \
    GRANTDOCTOR_DATA_DIR=/var/lib/grantdoctor/data \
    GRANTDOCTOR_LOG_FORMAT=json
EXPOSE 8080 9090
# A non-loopback listener needs --proxy-auth or --allow-clients (GRANTDOCTOR_PROXY_AUTH /
# GRANTDOCTOR_ALLOW_CLIENTS); the proxy refuses to start without one.
ENTRYPOINT ["/usr/local/bin/grantdoctor", "run"]
