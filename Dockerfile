# A static, stripped reaper in an image of its own, for any Linux platform.
# Use it as a base, or copy the binary into yours:
#
#	COPY --from=reaper /reaper /reaper
#	ENTRYPOINT ["/reaper", "--"]
#
# Build: docker build -t reaper .   (or podman build)
# Another platform, or several (BuildKit, or podman): the build stage runs on
# the build machine and cross-compiles, nothing is emulated:
#	docker buildx build --platform=linux/amd64,linux/arm64,linux/arm/v7 -t reaper .
# Stamp the commit that --version names: --build-arg=COMMIT=$(git rev-parse HEAD)

# The Go release is pinned; the go directive of go.mod is the minimum.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY reaper ./reaper
COPY signals ./signals
# The platform to build for: the builder sets these (empty: the build
# machine's own). The variant is arm's GOARM (linux/arm/v6: 6) or amd64's
# GOAMD64; 32-bit mips builds with soft floats, as .ci/release does, for
# routers without an FPU.
ARG TARGETOS TARGETARCH TARGETVARIANT
ARG COMMIT=unknown
# The documented build (see cmd/reaper/preempt.go): async preemption off at
# link time, so every SIGURG reaper sees came from outside.
RUN case "$TARGETARCH/$TARGETVARIANT" in \
	arm/v*) export GOARM="${TARGETVARIANT#v}" ;; \
	amd64/v*) export GOAMD64="$TARGETVARIANT" ;; \
	esac; \
	GOOS="${TARGETOS:-linux}" GOARCH="$TARGETARCH" GOMIPS=softfloat go build -o /reaper \
	-ldflags="-s -w -X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0,updatemaxprocs=0 -X=main.commit=$COMMIT" \
	./cmd/reaper

FROM scratch
COPY --from=build /reaper /reaper
ENTRYPOINT ["/reaper", "--"]
