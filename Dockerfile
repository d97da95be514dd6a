# The kube-bastion server image.
#
#   docker build -t ghcr.io/kube-bastion/kube-bastion:0.1.0 .
#
# The runtime image is distroless (glibc, CA certificates, no shell) and runs as the
# non-root user 65532. deploy/ runs it in a cluster.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# `dist`: the release profile with fat LTO and one codegen unit (Cargo.toml).
RUN cargo build --profile dist --locked -p kube-bastion-server \
    && cp target/dist/kube-bastion /usr/local/bin/kube-bastion

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/kube-bastion /usr/local/bin/kube-bastion
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kube-bastion"]
