# syntax=docker/dockerfile:1
# The waqueue container image: one static binary on distroless/static (CA certificates, tzdata,
# /etc/passwd with the nonroot user; no shell, no libc, no curl), running as a non-root user with
# its state in the /data volume. The project's machines run no Docker, so this image is not built
# there; the packaging test (cmd/waqueue/internal/packaging) builds the binary with the same
# script as below and runs it in an empty root with only the binary, CA certificates and tzdata
# until `waqueue healthcheck` answers. See docs/operations.md, "Container".

# The Go version is go.mod's (a test checks they agree).
ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
# The whole context, .git included when present, so the build stamps its VCS revision.
COPY . .
RUN ./scripts/build-static.sh /out/waqueue && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/waqueue /usr/local/bin/waqueue
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV WAQUEUE_DATA_DIR=/data \
    WAQUEUE_LISTEN=0.0.0.0:8080
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/waqueue", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/waqueue"]
CMD ["serve"]
