# syntax=docker/dockerfile:1.7
# veil as a container: the release binary on Debian slim, as a non-root user,
# with the RDS CA bundle for sslmode=verify-full.
#   docker build -t veil .          (multi-arch: .github/workflows/release.yml)
FROM rust:1.94.1-bookworm AS build
WORKDIR /src
# 1. Dependencies alone, against placeholder sources: this layer is rebuilt
#    only when Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for bench in masking writer lifecycle; do echo 'fn main() {}' > "benches/$bench.rs"; done \
 && cargo build --release --locked --bin veil \
 && rm -rf src benches target/release/.fingerprint/veil-* target/release/deps/veil-* target/release/deps/libveil-*
# 2. veil itself (the built-in login contract is embedded from examples/).
COPY src src
COPY benches benches
COPY examples/contracts/login.yaml examples/contracts/login.yaml
RUN cargo build --release --locked --bin veil

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home veil
# Amazon RDS's CA bundle (every region), for
# DATABASE_URL=...?sslmode=verify-full&sslrootcert=/etc/ssl/certs/rds-global-bundle.pem
ADD --chmod=0644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /etc/ssl/certs/rds-global-bundle.pem
COPY --from=build /src/target/release/veil /usr/local/bin/veil
USER 10001:10001
# Zero-configuration runs keep their keyring in $XDG_DATA_HOME/veil/keyring.json:
# mount /data on a volume so it outlives the container, or name the keyring
# (VEIL_KEY, VEIL_KEY_FILE, VEIL_KEY_SECRET_ID). docs/deploy.md has the choices.
ENV XDG_DATA_HOME=/data
VOLUME ["/data"]
EXPOSE 9898
ENTRYPOINT ["veil"]
CMD ["run"]
