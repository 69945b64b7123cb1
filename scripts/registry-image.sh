#!/usr/bin/env bash
# Build the registry image (example-registry/, README.rst "The registry
# image") on the local Docker engine from local files only, on the same
# debootstrap base as the example (scripts/docker-image.sh does the work):
#
#   scripts/registry-image.sh [BINARY] [TAG]
#
# BINARY: the mc-launcher static binary (default: scripts/build-static.sh's);
# TAG: default mc-launcher/registry:latest. The Debian packages (registry,
# notary, nginx, PostgreSQL) are installed once into
# mc-launcher/example-registry-packages:bookworm (a few minutes; apt-get
# reaches the Debian mirror), then reused; --packages-only stops there.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/docker-image.sh --project example-registry "${1:-}" "${2:-mc-launcher/registry:latest}"
