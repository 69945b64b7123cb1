#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine; fast and
# quiet when everything is already there. Run by scripts/test.sh.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

# util-linux: unshare, nsenter, setpriv, script (PID-1 tests, tty tests)
for tool in unshare nsenter setpriv script; do have "$tool" || need_apt+=(util-linux); done
have ps || need_apt+=(procps)
# Debian's own Python (not a pyenv one under /root, which the tests hide)
# runs the salt virtual environment.
[ -x /usr/bin/python3 ] || need_apt+=(python3)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
# The SSH tests log in for real: sshd, ssh, ssh-keygen.
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
have ssh || need_apt+=(openssh-client)
have ssh-keygen || need_apt+=(openssh-client)
# The Docker tests build their base image with debootstrap (Docker Engine
# itself comes with the machine: there is no registry to pull from).
have debootstrap || need_apt+=(debootstrap)
# tests/makina_circus.rs runs makina-states' circus watchers with the real
# daemons (never started on the host: the policy-rc.d guard below).
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
[ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
[ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
[ -x /usr/sbin/cron ] || need_apt+=(cron)
have docker || { echo "Docker Engine is needed for tests/docker.rs" >&2; exit 1; }
# tests/release.rs: the aarch64 release binary runs under Debian's qemu-user;
# file and readelf look at every binary; gpg/gpgv sign and verify SHA256SUMS.
[ -x /usr/bin/qemu-aarch64-static ] || need_apt+=(qemu-user-static)
have file || need_apt+=(file)
have readelf || need_apt+=(binutils)
have gpgv || need_apt+=(gpgv)
have gpg || need_apt+=(gnupg)
# tests/help.rs: the completions are loaded by the shells they are for, and
# the man page is formatted by groff with warnings on.
have zsh || need_apt+=(zsh)
have fish || need_apt+=(fish)
have groff || need_apt+=(groff-base)

if [ "${#need_apt[@]}" -gt 0 ]; then
    pkgs=$(printf '%s\n' "${need_apt[@]}" | sort -u | tr '\n' ' ')
    echo "installing: $pkgs"
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start daemons here (openssh-server would start sshd
    # on the host): a policy-rc.d that refuses, for the install only.
    policy=/usr/sbin/policy-rc.d
    had_policy=no
    [ -e "$policy" ] && had_policy=yes
    if [ "$had_policy" = no ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
    fi
    trap '[ "$had_policy" = no ] && rm -f "$policy"' EXIT
    # Quiet: no progress bars (no terminal) and no debconf chatter.
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends $pkgs 2>&1 >/dev/null |
        { grep -v -e '^debconf: ' -e 'apt-utils' >&2 || true; }
fi

# A Python virtual environment with salt, for the reconfigure tests that run
# a real salt-call. Kept outside the clone (and outside /root, which the tests
# hide) so that later runs reuse it.
venv="${MC_TEST_VENV:-/var/cache/mc-launcher-test/salt-venv}"
salt_version="3008.4"
if ! "$venv/bin/salt-call" --version 2>/dev/null | grep -q "$salt_version" \
    || [ "$(readlink -f "$venv/bin/python3")" != "$(readlink -f /usr/bin/python3)" ]; then
    echo "creating $venv with salt $salt_version (takes a minute or two)"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "salt==$salt_version"
fi
"$venv/bin/salt-call" --version

# A second, small venv for the tools the tests run: kubernetes-validate
# checks example-project/kubernetes/ against the Kubernetes API schemas it
# ships (offline; tests/kubernetes.rs). Pinned, like salt above.
tools="${MC_TOOLS_VENV:-/var/cache/mc-launcher-test/tools-venv}"
kv_version="1.37.0"
if [ "$("$tools/bin/kubernetes-validate" --version 2>/dev/null)" != "$kv_version" ] \
    || [ "$(readlink -f "$tools/bin/python3")" != "$(readlink -f /usr/bin/python3)" ]; then
    echo "creating $tools with kubernetes-validate $kv_version"
    rm -rf "$tools"
    mkdir -p "$(dirname "$tools")"
    /usr/bin/python3 -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
# prometheus_client's parser checks `ctl metrics` and GET /metrics strictly
# (tests/metrics.rs), pinned too; added to an existing venv in place.
pc_version="0.26.0"
if [ "$("$tools/bin/python3" -c 'import prometheus_client, importlib.metadata as m; print(m.version("prometheus_client"))' 2>/dev/null)" != "$pc_version" ]; then
    echo "installing prometheus_client $pc_version into $tools"
    "$tools/bin/pip" install -q --disable-pip-version-check "prometheus_client==$pc_version"
fi

# cargo fuzz, for the short fuzz run of the test command (fuzz/run.sh).
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet

# The base image of the Docker tests (debootstrap, once; cached by tag). The
# example image itself is built by the tests, from the binary under test.
if ! docker image inspect mc-launcher/base:bookworm >/dev/null 2>&1; then
    echo "building the Docker base image (a minute, once)"
    # This script installs the test dependencies: the image script may too.
    MC_INSTALL_DEPS=1 bash scripts/docker-image.sh --base-only
fi
# The registry image's Debian packages (docker-registry, notary, nginx,
# PostgreSQL) on that base, once (cached by tag; apt-get inside the build
# reaches the Debian mirror): tests/registry.rs then builds the image from
# the binary under test in seconds.
if ! docker image inspect mc-launcher/example-registry-packages:bookworm >/dev/null 2>&1; then
    echo "building the registry image's packages layer (a few minutes, once)"
    bash scripts/registry-image.sh --packages-only
fi
echo "test environment ready"
