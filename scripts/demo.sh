#!/usr/bin/env bash
# The whole life of a makina container, without Docker and without root:
# a temporary copy of layout/ + example-project/ with a data volume that
# carries a pillar override and an SSH key, then mc-launcher over it.
# Ctrl-C stops everything cleanly and prints the summary.
#
#   scripts/demo.sh
#
# It builds the launcher with cargo (any user with Rust installed), unless
# MC_DEMO_BIN names a built mc-launcher. MC_DEMO_DIR=DIR keeps the tree in
# DIR (default: a new temporary directory), MC_DEMO_PORT picks the page's
# port (default: a free one).
set -euo pipefail

missing() { echo "scripts/demo.sh: $*" >&2; exit 1; }
if [ -n "${MC_DEMO_BIN:-}" ]; then
    [ -f "$MC_DEMO_BIN" ] && [ -x "$MC_DEMO_BIN" ] ||
        missing "MC_DEMO_BIN=$MC_DEMO_BIN is not an executable file: set it to a built mc-launcher"
elif ! command -v cargo >/dev/null 2>&1; then
    missing "cargo is not on your PATH: install Rust with rustup (https://rustup.rs) or set MC_DEMO_BIN to a built mc-launcher"
fi
command -v python3 >/dev/null 2>&1 ||
    missing "python3 is not on your PATH: install Python 3 (the example's services are Python scripts)"

cd "$(dirname "$0")/.."
repo=$PWD

if [ -n "${MC_DEMO_BIN:-}" ]; then
    bin=$MC_DEMO_BIN               # the tests pass the binary they built
else
    echo "== building mc-launcher (release)" >&2
    cargo build --release --quiet
    # Wherever this user's cargo puts it (CARGO_TARGET_DIR, .cargo/config.toml).
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    bin=$target/release/mc-launcher
fi

tmp=${MC_DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/mc-launcher-demo.XXXXXX")}
mkdir -p "$tmp"
root=$tmp/srv
project=example
volume=$root/projects/$project/data

echo "== the image: layout/ + example-project/ in $root" >&2
rm -rf "$root"
layout/install "$root" "$project" example-project

echo "== the operator's data volume: a pillar override and a public key" >&2
port=${MC_DEMO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
cat > "$volume/configuration/pillar.sls" <<PILLAR
# The operator's override: only what differs from PILLAR.sample.
makina-projects.$project:
  data:
    site_name: "Demo site, configured from the data volume"
    host: 127.0.0.1
    port: $port
    worker_interval: 2
PILLAR
if command -v ssh-keygen >/dev/null; then
    rm -f "$tmp/demo_key" "$tmp/demo_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C demo@mc-launcher -f "$tmp/demo_key"
    cp "$tmp/demo_key.pub" "$volume/ssh/demo.pub"
else
    echo "   (no ssh-keygen here: the SSH step will find no key)" >&2
fi

# Non-root stand-ins for what the image has: a temporary home for the
# keys, a state dir in the temp tree, no sshd (it needs root).
export MC_EXAMPLE_STATE=$tmp/state
export MC_EXAMPLE_SSH_USER=$(id -un)
export MC_EXAMPLE_SSH_HOME=$tmp/home
export MC_EXAMPLE_SSHD=never
mkdir -p "$MC_EXAMPLE_SSH_HOME"

cat >&2 <<INFO
== starting mc-launcher (Ctrl-C to stop)
   page:             http://127.0.0.1:$port/
   keys installed:   $MC_EXAMPLE_SSH_HOME/.ssh/authorized_keys
   rendered config:  $volume/configuration/app.json
   status:           MC_EXAMPLE_STATE=$tmp/state $bin --root $root ctl status
   the tree stays in $tmp (rm -rf it when done)
INFO
exec "$bin" --root "$root" "$@"
