# syntax=docker/dockerfile:1
# Builds d2-api, d2-worker and d2ctl; the runtime image is small and runs as a non-root
# user. One image, three commands: `d2-api` (the default), `d2-worker`, `d2ctl`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin d2-api --bin d2-worker --bin d2ctl

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin d2
WORKDIR /app
COPY --from=build /src/target/release/d2-api /src/target/release/d2-worker /src/target/release/d2ctl /usr/local/bin/
COPY config ./config
USER d2
ENV D2_ENV=production \
    D2_CONFIG_DIR=/app/config
# 8080: the API; 9090: the worker's /metrics, /healthz and /readyz.
EXPOSE 8080 9090
CMD ["d2-api"]
