# syntax=docker/dockerfile:1
#
# codat-rotator in a container: a static binary on distroless, as the
# nonroot user (65532), with its state on a volume.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg COMMIT=$(git rev-parse HEAD) -t codat-rotator .
#   docker run -d --name codat-rotator -p 127.0.0.1:9464:9464 \
#     -v codat-rotator-state:/var/lib/codat-rotator \
#     -v /etc/codat-rotator/config.yaml:/etc/codat-rotator/config.yaml:ro \
#     -e VAULT_ADDR -e VAULT_TOKEN codat-rotator
#
# docs/operations.md says more.

# The base images are pinned by digest: a rebuild of this commit gets the
# same bases, whatever the tags point at later. The digests are those of
# the multi-platform indexes (one digest for every architecture). To
# refresh them, on a machine that reaches the registries:
#   crane digest golang:1.26-bookworm
#   crane digest gcr.io/distroless/static-debian12:nonroot
# (or `docker buildx imagetools inspect IMAGE`), paste each after its
# tag's @. The Go version in the tag is go.mod's (TestDockerfile checks
# both). The digests below were not resolved against the registries,
# which the machine that wrote them cannot reach: they are the ones other
# public projects pinned for these exact tags (the distroless one dated
# 2026-08-26 there). Resolve them as above before a release.
# The build stage's Go is go.mod's `go` line (1.26); go.mod's toolchain
# line (go1.27.3, a Go without known vulnerabilities in what the daemon
# uses) is fetched by that Go at the first command (GOTOOLCHAIN=auto).

# Build on the builder's platform and cross-compile: the binary is pure Go.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm@sha256:b305420a68d0f229d91eb3b3ed9e519fcf2cf5461da4bef997bf927e8c0bfd2b AS build
WORKDIR /src
COPY go.mod go.sum ./
# The modules go.mod replaces with directories of this repository.
COPY secret/go.mod secret/
COPY codatauth/go.mod codatauth/go.sum codatauth/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev
ARG COMMIT=""
ARG DATE=""
# As `make build` builds it: static (CGO_ENABLED=0), reproducible paths
# (-trimpath), version stamped.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" \
      -o /out/codat-rotator ./cmd/codat-rotator \
 && mkdir -p /out/state /out/run

# No shell, no package manager: the binary, CA certificates, tzdata (for
# CRON_TZ=) and a nonroot user.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/codat-rotator /codat-rotator
# The daemon writes only these two: the state file and the admin socket.
COPY --from=build --chown=65532:65532 --chmod=0700 /out/state /var/lib/codat-rotator
COPY --from=build --chown=65532:65532 --chmod=0700 /out/run /run/codat-rotator
USER 65532:65532
VOLUME ["/var/lib/codat-rotator"]
# listen.metrics: set it to 0.0.0.0:9464 in the config to reach it from
# outside the container (the default, 127.0.0.1:9464, is for hosts).
EXPOSE 9464
ENTRYPOINT ["/codat-rotator"]
CMD ["run", "--config", "/etc/codat-rotator/config.yaml"]
