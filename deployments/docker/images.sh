#!/usr/bin/env bash
# Builds slotkv's container images (`make images`) from the static binaries
# in $SLOTKV_BIN (`make build`; `make etcd` for slotkv/etcd). Every image
# is FROM scratch: nothing is pulled, so this works offline and the images
# hold only what is copied here:
#   /<binary>                            the static binaries
#   /etc/ssl/certs/ca-certificates.crt   this host's CA bundle, for HTTPS downloads
#   /data, /tmp                          owned by 65532 (the user the image runs as)
#
# Why the ownership matters: a scratch image has no chown to run at start,
# and Docker initialises a new named volume from the content and ownership
# of the image directory it is mounted on. So a volume on /data is writable
# by user 65532 from its first use.
#
# Each image is built from its own small staging directory under
# build/images/ (not the repository), tagged slotkv/NAME:dev and
# slotkv/NAME:$VERSION.
set -euo pipefail

BIN=${SLOTKV_BIN:?set SLOTKV_BIN to the directory of the built binaries}
OUT=${SLOTKV_IMAGES_DIR:-build/images}
VERSION=${VERSION:-dev}
CA=${SLOTKV_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
USER_ID=65532
# The legacy builder behaves the same on every engine (BuildKit may be
# absent, as with Docker 20.10 without buildx) and needs nothing but the
# daemon for FROM scratch. The Makefile sets it too.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

if [ ! -s "$CA" ]; then
  echo "images: CA bundle $CA is missing or empty; install the ca-certificates package or set SLOTKV_CA_BUNDLE" >&2
  exit 1
fi
# An image tag allows [A-Za-z0-9_.-] and at most 128 characters.
tag=$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128)

# image NAME ENTRYPOINT BINARY... ; ENTRYPOINT "" leaves it to the caller
# (the tools image holds several commands).
image() {
  local name=$1 entry=$2
  shift 2
  local stage=$OUT/$name
  rm -rf "$stage"
  mkdir -p "$stage/rootfs/etc/ssl/certs" "$stage/owned/data" "$stage/owned/tmp"
  cp "$CA" "$stage/rootfs/etc/ssl/certs/ca-certificates.crt"
  for b in "$@"; do
    if [ ! -x "$BIN/$b" ]; then
      echo "images: $BIN/$b is missing; run 'make build etcd'" >&2
      exit 1
    fi
    cp "$BIN/$b" "$stage/rootfs/$b"
  done
  chmod 0755 "$stage/owned/data"
  chmod 1777 "$stage/owned/tmp"
  local run='ENTRYPOINT ["/'"$entry"'"]'
  if [ -z "$entry" ]; then run='CMD ["/slotkvctl", "help"]'; fi
  cat >"$stage/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=$USER_ID:$USER_ID owned/ /
USER $USER_ID:$USER_ID
LABEL org.opencontainers.image.title="$name" org.opencontainers.image.version="$VERSION" \\
      org.opencontainers.image.source="https://github.com/slotkv/slotkv"
$run
DOCKERFILE
  local refs=("slotkv/$name:dev") args=() out
  if [ "$tag" != dev ]; then refs+=("slotkv/$name:$tag"); fi
  for r in "${refs[@]}"; do args+=(-t "$r"); done
  echo "images: ${refs[*]} from $stage ($(du -sh "$stage" | cut -f1))"
  # Quiet unless it fails: the legacy builder's deprecation notice would
  # otherwise be printed five times.
  if ! out=$(docker build -q "${args[@]}" "$stage" 2>&1); then
    echo "$out" >&2
    echo "images: building slotkv/$name failed" >&2
    exit 1
  fi
}

# `images.sh NAME ENTRYPOINT BINARY...` builds that one image (test-compose
# builds its trace receiver this way); no arguments: every slotkv image.
if [ $# -gt 0 ]; then
  image "$@"
  exit 0
fi
image slotkv-storage slotkv-storage slotkv-storage
image slotkv-router slotkv-router slotkv-router
image slotkv-migrator slotkv-migrator slotkv-migrator
image slotkv-downloader slotkv-downloader slotkv-downloader
image slotkv-console slotkv-console slotkv-console
image slotkv-tools "" slotkvctl slotkv-dataset
# etcd's own server (bin/etcd, `make etcd`) for the compose stack's 3-member
# cluster; /data is its volume (--data-dir /data/etcd, which etcd creates
# with the 0700 it wants), `/etcd healthcheck` its container health check.
image etcd etcd etcd
docker images --filter "reference=slotkv/*:dev" --format '  {{.Repository}}:{{.Tag}} {{.Size}}' | sort
