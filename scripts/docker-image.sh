#!/usr/bin/env bash
# Build the example image on the local Docker engine, from local files only
# (there is no registry): a Debian rootfs made by debootstrap from the
# Debian package mirror, imported as the base image (cached by tag), then
# example-project/Dockerfile over it.
#
#   scripts/docker-image.sh [BINARY] [TAG]
# BINARY defaults to the release artifact, the static binary that
# scripts/build-static.sh builds (and builds now if needed): it needs no
# libc from the image. TAG defaults to mc-launcher/example:latest;
# --base-only builds the base image only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
tag=${2:-mc-launcher/example:latest}
base=mc-launcher/base:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! docker image inspect "$base" >/dev/null 2>&1; then
    echo "== building $base with debootstrap (once; cached by tag)" >&2
    if ! command -v debootstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    rootfs=$(mktemp -d /var/tmp/mc-launcher-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log=/var/tmp/mc-launcher-debootstrap.log
    debootstrap --variant=minbase --include=python3,openssh-server,procps \
        bookworm "$rootfs" "$mirror" >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
    # Host keys belong to each container (kept in its volume), not to the image.
    rm -f "$rootfs"/etc/ssh/ssh_host_*
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
fi

[ "$bin" = --base-only ] && exit 0
[ -n "$bin" ] || bin=$(scripts/build-static.sh)

echo "== building $tag" >&2
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/mc-launcher"
cp -R layout "$ctx/layout"
cp -R example-project "$ctx/example-project"
cp example-project/Dockerfile "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" -t "$tag" "$ctx" >&2
echo "$tag"
