# syntax=docker/dockerfile:1
# Flowlet's container image: `docker build -t flowlet:0.1.0 .`
#
# Stage 1 compiles the release binary; stage 2 is distroless (glibc, CA certificates, no shell)
# with nothing but that binary. config/*.toml and migrations/ are compiled into the binary, so
# the runtime image needs no files of its own. Secrets come from the environment at run time
# (the Helm chart's Secret); none are baked in.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src

# Dependencies in their own layer: build the dependency graph against stub targets, so editing
# the sources does not recompile every crate. Cargo.toml declares tests and benches by name, so
# their files must exist (as stubs) for the manifest to load; they are never built here.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/api benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for f in tests/api/main.rs tests/architecture.rs benches/platform.rs benches/ledger.rs benches/payments.rs; do \
         echo 'fn main() {}' > "$f"; \
       done \
    && cargo build --release --locked --bin flowlet \
    && rm -rf src target/release/flowlet* target/release/deps/flowlet-* target/release/deps/libflowlet-* \
              target/release/.fingerprint/flowlet-*

# The real sources (the stub tests/benches stay: the binary does not use them).
COPY config ./config
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked --bin flowlet \
    && install -D -m 0755 target/release/flowlet /out/flowlet

FROM ${RUNTIME_IMAGE}
# distroless's "nonroot" user, numerically, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
ENV FLOWLET_ENV=production
COPY --from=build /out/flowlet /usr/local/bin/flowlet
# Nothing is written at run time in production (database and Redis are remote); the root
# filesystem can be mounted read-only. Anything temporary belongs under /tmp (an emptyDir in
# the Helm chart).
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["flowlet"]
CMD ["serve"]
