# veil as a container: the release binary on Debian slim, running as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin veil

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home veil
COPY --from=build /src/target/release/veil /usr/local/bin/veil
USER veil
# The default keyring lands in $XDG_DATA_HOME/veil/keyring.json: mount /data
# on a volume (or pass VEIL_KEY_FILE / a secret) so the key outlives the container.
ENV XDG_DATA_HOME=/data
VOLUME ["/data"]
ENTRYPOINT ["veil"]
CMD ["run"]
