# syntax=docker/dockerfile:1
# The orchestrator image for those with a Docker engine; `make image` (hack/image) builds the same
# image without one. Build with:
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse --short HEAD) --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/image-prewarmer/prewarm-orchestrator:dev .
# For every architecture the node pools run (the warmer pods copy the binary from this image), use
# `docker buildx build --platform linux/amd64,linux/arm64 ...` with the same arguments.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
# Set by BuildKit to each --platform's; a default here would override it (every platform's image
# would get the build machine's binary). Empty (the classic builder), Go builds for the host.
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X github.com/image-prewarmer/image-prewarmer/pkg/version.Version=${VERSION} -X github.com/image-prewarmer/image-prewarmer/pkg/version.Commit=${COMMIT}" \
      -o /out/prewarm-orchestrator ./cmd/prewarm-orchestrator

# Static base with /etc/passwd entries for nonroot (65532), CA certificates and tzdata.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="prewarm-orchestrator" \
      org.opencontainers.image.source="https://github.com/image-prewarmer/image-prewarmer" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/prewarm-orchestrator /usr/local/bin/prewarm-orchestrator
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/usr/local/bin/prewarm-orchestrator"]
