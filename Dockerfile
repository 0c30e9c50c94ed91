# First draft (issue 2); the image is finished and tested in the Kubernetes issue.
# No Docker engine runs where s3load is developed, so this file is not yet built in
# CI: the plan is a chroot test that runs the same static binary in an empty root.
#
# Static musl binary, shipped in an empty image with a CA bundle, as a non-root user.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin s3load

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/s3load /usr/local/bin/s3load
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/s3load"]
