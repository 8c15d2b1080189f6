# The operator image: the binary is built in a Go stage and shipped alone on a
# distroless, non-root base (no shell, no package manager).
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY internal/ internal/
COPY pkg/ pkg/
ARG TARGETOS=linux TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/largedata-operator ./cmd/largedata-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/largedata-operator /largedata-operator
USER 65532:65532
ENTRYPOINT ["/largedata-operator"]
