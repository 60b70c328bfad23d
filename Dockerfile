# Two stages on the stock golang image: static binaries, then images with
# nothing but a binary and the CA roots, run as an unprivileged user.
# scripts/docker-test.sh builds and runs them with Podman in CI.

# Build: modules first (cached while go.mod and go.sum are unchanged), then
# static binaries.
FROM golang:1.26-bookworm AS build
# Where modules come from: Go's default unless given, as in
# `docker build --build-arg GOPROXY=https://proxy.example .`
# (scripts/docker-test.sh passes the host's module cache as a file:// proxy).
ARG GOPROXY
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ ./cmd/...

# `docker buildx build --target=artefacts --output type=local,dest=bin .`
# exports the binaries.
FROM scratch AS artefacts
COPY --from=build /out/ /

# Runtime: nothing but the binary and the CA roots (for the client's
# system roots), as an unprivileged user.
FROM scratch AS runtime-base
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532

FROM runtime-base AS client
COPY --from=build /out/client /client
ENTRYPOINT ["/client"]

FROM runtime-base AS server
COPY --from=build /out/server /server
EXPOSE 8775
ENTRYPOINT ["/server"]
