# A static, stripped reaper in an image of its own. Use it as a base, or copy
# the binary into yours:
#
#	COPY --from=reaper /reaper /reaper
#	ENTRYPOINT ["/reaper", "--"]
#
# Build: docker build -t reaper .   (or podman build)

# The Go release is pinned; the go directive of go.mod is the minimum.
FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY reaper ./reaper
COPY signals ./signals
# The documented build (see cmd/reaper/preempt.go): async preemption off at
# link time, so every SIGURG reaper sees came from outside.
RUN go build -o /reaper \
	-ldflags="-s -w -X=runtime.godebugDefault=asyncpreemptoff=1,containermaxprocs=0,updatemaxprocs=0" \
	./cmd/reaper

FROM scratch
COPY --from=build /reaper /reaper
ENTRYPOINT ["/reaper", "--"]
