# syntax=docker/dockerfile:1
# Images for users with Docker (or any BuildKit builder). Without a
# container engine, `make image` builds the same images as OCI archives.
#
#   docker build --target manager   -t ghcr.io/purplerain/mesh-operator:v0.1.0 .
#   docker build --target mesh-node -t ghcr.io/purplerain/mesh-node:v0.1.0 .
#
# Both are static Go binaries on a distroless base that runs as the
# non-root user 65532, with no shell.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w" -o /out/manager ./cmd/manager && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w" -o /out/mesh-node ./cmd/mesh-node

FROM gcr.io/distroless/static-debian12:nonroot AS mesh-node
COPY --from=build /out/mesh-node /usr/local/bin/mesh-node
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mesh-node"]

# The operator is the last stage, so a plain `docker build .` builds it.
FROM gcr.io/distroless/static-debian12:nonroot AS manager
COPY --from=build /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
