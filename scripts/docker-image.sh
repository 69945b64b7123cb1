#!/usr/bin/env bash
# Build the example image on the local Docker engine, from local files only
# (there is no registry): a Debian rootfs made by debootstrap from the
# Debian package mirror, imported as the base image (cached by tag), then
# example-project/Dockerfile over it.
#
#   scripts/docker-image.sh [--project DIR] [BINARY] [TAG]
# BINARY defaults to the release artifact, the static binary that
# scripts/build-static.sh builds (and builds now if needed): it needs no
# libc from the image. TAG defaults to mc-launcher/example:latest;
# --base-only builds the base image only. --project DIR builds another
# makina project of this tree (DIR/Dockerfile; scripts/registry-image.sh
# builds example-registry so); a Dockerfile whose first stage is named
# `packages` (Debian packages only) has that stage built and tagged once,
# mc-launcher/<DIR>-packages:bookworm, so that rebuilds and the tests'
# image removals keep the downloaded packages.
#
# The base image needs debootstrap (and root) once. This script never
# installs anything on its own: with MC_INSTALL_DEPS=1 it may install
# debootstrap with apt-get; without it, it stops and says what to install.
# DEBIAN_MIRROR picks the mirror, MC_BASE_IMAGE the base image's tag.
set -euo pipefail
cd "$(dirname "$0")/.."
project=example-project
if [ "${1:-}" = --project ]; then
    project=${2:?--project needs a directory}
    shift 2
fi
bin=${1:-}
tag=${2:-mc-launcher/example:latest}
base=${MC_BASE_IMAGE:-mc-launcher/base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { echo "scripts/docker-image.sh: $*" >&2; exit 1; }

# apt-get without debconf's chatter (no terminal, no apt-utils).
apt_quiet() {
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get -qq -y -o Dpkg::Use-Pty=0 "$@" 2>&1 >/dev/null |
        { grep -v -e '^debconf: ' -e 'apt-utils' >&2 || true; } || rc=$?
    return "$rc"
}

# The classic builder's deprecation banner: its first line, the indented
# lines under it and the blank line after.
drop_banner() {
    awk '/^DEPRECATED: The legacy builder/ { skip = 1; next }
         skip && /^[[:space:]]+[^[:space:]]/ { next }
         skip && /^[[:space:]]*$/ { skip = 0; next }
         { skip = 0; print }'
}

if ! docker image inspect "$base" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        if [ "${MC_INSTALL_DEPS:-}" = 1 ]; then
            echo "== installing debootstrap with apt-get (MC_INSTALL_DEPS=1)" >&2
            apt_quiet update
            apt_quiet install --no-install-recommends debootstrap
        else
            die "debootstrap is needed (once) to build the base image $base from the Debian mirror:
  install it (apt-get install debootstrap), or set MC_INSTALL_DEPS=1 to let this script install it with apt-get"
        fi
    fi
    [ "$(id -u)" = 0 ] || die "building the base image $base with debootstrap needs root (once; then it is cached)"
    echo "== building $base with debootstrap (once; cached by tag)" >&2
    work=$(mktemp -d /var/tmp/mc-launcher-base.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    rootfs=$work/rootfs
    debootstrap --variant=minbase --include=python3,openssh-server,procps \
        bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -30 "$work/debootstrap.log" >&2; exit 1; }
    # Host keys belong to each container (kept in its volume), not to the image.
    rm -f "$rootfs"/etc/ssh/ssh_host_*
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
    rm -rf "$work"
    trap - EXIT
fi

[ "$bin" = --base-only ] && exit 0

build() { # docker build arguments
    if docker buildx version >/dev/null 2>&1; then
        # BuildKit, from the local image store and the local context only.
        DOCKER_BUILDKIT=1 docker build -q --build-arg "BASE=$base" "$@" >/dev/null
    else
        # No buildx: the classic builder, without its deprecation banner.
        DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" "$@" 2>&1 >/dev/null |
            drop_banner >&2
    fi
}

[ -f "$project/Dockerfile" ] || die "$project/Dockerfile: no such file (--project names a directory of this tree)"
name=$(basename "$project")
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$project/Dockerfile" "$ctx/Dockerfile"
if grep -Eqi '^FROM .* AS packages$' "$project/Dockerfile"; then
    packages=mc-launcher/$name-packages:bookworm
    if ! docker image inspect "$packages" >/dev/null 2>&1; then
        echo "== building $packages (Debian packages; once, cached by tag)" >&2
        build --target packages -t "$packages" "$ctx"
    fi
fi
[ "$bin" = --packages-only ] && exit 0
[ -n "$bin" ] || bin=$(scripts/build-static.sh)

echo "== building $tag" >&2
cp "$bin" "$ctx/mc-launcher"
cp -R layout "$ctx/layout"
cp -R "$project" "$ctx/$name"
build -t "$tag" "$ctx"
echo "$tag"
