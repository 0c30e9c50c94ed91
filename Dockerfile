# s3load's image: one static binary and a CA bundle in an empty image, run as a
# non-root user. No shell, no package manager, nothing else to patch.
#
# No Docker engine runs where s3load is developed, so tests/it/image.rs does what
# this image does: it builds the binary the same way, copies it and the CA bundle
# into an empty directory, and runs a real sync in it with chroot as uid 65532.
#
#   docker build -t s3load .
#   docker run --rm -e AWS_REGION=... s3load sync 's3://bucket/prefix/*' /data
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically (crt-static): no loader or libc needed at run time.
# Name resolution works without NSS modules (glibc >= 2.34 builds its files and
# dns backends into libc), reading the pod's /etc/hosts and /etc/resolv.conf
# (search list and ndots honoured: tests/it/image.rs runs it against a DNS
# server of the test harness).
# The `dist` profile: fat LTO, one codegen unit, panic=abort, stripped.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile dist --locked --target x86_64-unknown-linux-gnu --bin s3load

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-gnu/dist/s3load /usr/local/bin/s3load
# The distroless "nonroot" uid; set runAsNonRoot in the pod as well.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/s3load"]
