#!/usr/bin/env bash
# A release of mc-launcher, in dist/ (README "Install" says how to use it):
#
#   scripts/release.sh [--out DIR] [--arch ARCH]... [--no-sign] [--no-images]
#   scripts/release.sh --images-only [--out DIR]
#
#   mc-launcher-VERSION-ARCH            static musl binaries (x86_64, aarch64, armv7)
#   mc-launcher_VERSION_DEBARCH.deb     /usr/bin/mc-launcher + copyright (amd64, arm64, armhf)
#   mc-launcher-VERSION.cdx.json        CycloneDX SBOM of the crates in the binary
#   SHA256SUMS, SHA256SUMS.asc          checksums of the above, GPG-signed (detached)
# and, on the local Docker engine, FROM-scratch images holding only
# /mc-launcher, for `COPY --from=`: REPO:VERSION-amd64, -arm64, -armhf,
# and REPO:VERSION (this machine's arch); REPO is $MC_RELEASE_IMAGE, by
# default mc-launcher/mc-launcher (needs Docker: --no-images without it).
#
# Reproducible: SOURCE_DATE_EPOCH (default: the commit's date) is the only
# time that reaches an artifact, and no path of this machine does, so two
# builds of one commit give the same binaries and .debs byte for byte
# (tests/release.rs builds twice and compares); cargo-cyclonedx honours
# SOURCE_DATE_EPOCH too (no serial number, that timestamp). Only the
# signature carries the signing time.
#
# Signing: gpg's default secret key, or $MC_RELEASE_GPG_KEY (a key id), from
# $GNUPGHOME; --no-sign leaves SHA256SUMS.asc out.
# Idempotent: the binaries come from scripts/build-static.sh (a no-op when
# current); it installs what it lacks from Debian (dpkg-dev, gnupg) and
# cargo-cyclonedx from crates.io (once, into $CARGO_HOME/bin).
# Prints the dist directory on stdout; everything else goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 [--out DIR] [--arch x86_64|aarch64|armv7]... [--no-sign] [--no-images] | --images-only [--out DIR]" >&2
    exit 2
}
dist=$PWD/dist
arches=()
sign=yes
images=yes
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage; dist=$2; shift ;;
        --arch) [ $# -ge 2 ] || usage; arches+=("$2"); shift ;;
        --no-sign) sign=no ;;
        --no-images) images=no ;;
        --images-only) build=no ;;
        *) usage ;;
    esac
    shift
done
[ "${#arches[@]}" -gt 0 ] || arches=(x86_64 aarch64 armv7)
case "$dist" in /*) ;; *) dist=$PWD/$dist ;; esac
say() { echo "release: $*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { say "no version in Cargo.toml"; exit 1; }
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
deb_arch() { case "$1" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; armv7) echo armhf ;; esac; }
# Docker's platform of an arch.
platform() { case "$1" in x86_64) echo linux/amd64 ;; aarch64) echo linux/arm64 ;; armv7) echo linux/arm/v7 ;; esac; }

# --- the images: FROM scratch, /mc-launcher only ----------------------------
# The legacy builder (DOCKER_BUILDKIT=0: no buildx needed) with --platform:
# FROM scratch has nothing to run, so the arm64 image is made on an x86_64
# machine without emulation, and its platform is linux/arm64. (`docker
# import --platform` is not enough: Docker 28 records the host's arch.)
make_images() {
    local repo=${MC_RELEASE_IMAGE:-mc-launcher/mc-launcher} host a bin dir tag log
    host=$(uname -m)
    for a in "${arches[@]}"; do
        bin=$dist/mc-launcher-$version-$a
        [ -x "$bin" ] || { say "$bin is missing: run $0 first"; exit 1; }
        tag=$repo:$version-$(deb_arch "$a")
        dir=$(mktemp -d)
        install -m 0755 "$bin" "$dir/mc-launcher"
        touch -d "@$SOURCE_DATE_EPOCH" "$dir/mc-launcher"
        printf '%s\n' 'FROM scratch' 'COPY mc-launcher /mc-launcher' \
            'ENTRYPOINT ["/mc-launcher"]' > "$dir/Dockerfile"
        if ! log=$(DOCKER_BUILDKIT=0 docker build -q --platform "$(platform "$a")" \
            --label "org.opencontainers.image.version=$version" -t "$tag" "$dir" 2>&1); then
            echo "$log" >&2
            rm -rf "$dir"
            exit 1
        fi
        rm -rf "$dir"
        [ "$a" != "$host" ] || docker tag "$tag" "$repo:$version"
        say "image $tag"
    done
}
if [ "$build" = no ]; then
    make_images
    echo "$dist"
    exit 0
fi

# --- tools --------------------------------------------------------------------
need=()
command -v dpkg-deb >/dev/null || need+=(dpkg)
[ "$sign" = no ] || command -v gpg >/dev/null || need+=(gnupg)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]} from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cyclonedx_version=0.5.9
cargo_home=${CARGO_HOME:-$HOME/.cargo}
cdx=$cargo_home/bin/cargo-cyclonedx
if ! "$cdx" cyclonedx --version 2>/dev/null | grep -q " $cyclonedx_version\$"; then
    say "installing cargo-cyclonedx $cyclonedx_version from crates.io (once)"
    cargo install --quiet --locked --version "$cyclonedx_version" cargo-cyclonedx >&2
fi

# --- binaries -------------------------------------------------------------------
mkdir -p "$dist"
rm -f "$dist"/mc-launcher* "$dist"/SHA256SUMS*
for a in "${arches[@]}"; do
    t0=$(date +%s)
    bin=$(bash scripts/build-static.sh --target "$a")
    say "$a binary in $(($(date +%s) - t0)) s"
    install -m 0755 "$bin" "$dist/mc-launcher-$version-$a"
    touch -d "@$SOURCE_DATE_EPOCH" "$dist/mc-launcher-$version-$a"
done

# --- SBOM -------------------------------------------------------------------------
# The crates of the static binary (the musl target's dependencies, no dev or
# build-only ones), each with its version and license, from Cargo.lock.
sbom=$dist/mc-launcher-$version.cdx.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$cdx" cyclonedx --quiet --all --format json --spec-version 1.5 --target x86_64-unknown-linux-musl \
    --no-build-deps --override-filename sbom-tmp >&2
# cargo-cyclonedx reads `cargo metadata`, which also lists the optional
# dependencies of a crate whose feature is off (regex, for env_filter); the
# binary holds what `cargo tree` resolves for the musl target: the SBOM
# keeps those components only. The crate's own bom-ref names the clone's
# path: the remapped one instead, as in the binary.
cargo tree --locked -e normal --target x86_64-unknown-linux-musl --prefix none -f '{p}' |
    awk '{ sub(/^v/, "", $2); print $1 "@" $2 }' | sort -u > "$tmp/tree"
python3 - sbom-tmp.json "$tmp/tree" "$PWD" > "$sbom" <<'EOF'
import json, sys
bom = json.load(open(sys.argv[1]))
keep = set(open(sys.argv[2]).read().split())
comps = [c for c in bom.get("components", []) if f'{c["name"]}@{c.get("version", "")}' in keep]
refs = {c["bom-ref"] for c in comps} | {bom["metadata"]["component"]["bom-ref"]}
bom["components"] = comps
bom["dependencies"] = [
    dict(d, dependsOn=[r for r in d.get("dependsOn", []) if r in refs])
    for d in bom.get("dependencies", []) if d["ref"] in refs
]
text = json.dumps(bom, indent=2, ensure_ascii=False) + "\n"
print(text.replace(f"path+file://{sys.argv[3]}#", "path+file:///build/mc-launcher#"), end="")
EOF
rm -f sbom-tmp.json
# The crates, one "name version license" line each (for the copyright file).
python3 - "$sbom" > "$tmp/crates" <<'EOF'
import json, sys
bom = json.load(open(sys.argv[1]))
def lic(c):
    out = []
    for l in c.get("licenses", []):
        out.append(l.get("expression") or l.get("license", {}).get("id") or l.get("license", {}).get("name", ""))
    return " AND ".join(x for x in out if x) or "UNKNOWN"
comps = [bom["metadata"]["component"]] + bom.get("components", [])
for c in sorted(comps[1:], key=lambda c: (c["name"], c.get("version", ""))):
    print(c["name"], c.get("version", ""), lic(c))
EOF
if grep -q ' UNKNOWN$' "$tmp/crates"; then
    say "crates without a license in the SBOM:"; grep ' UNKNOWN$' "$tmp/crates" >&2; exit 1
fi

# --- .deb per arch ---------------------------------------------------------------
copyright() {
    cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mc-launcher
Comment: mc-launcher is one static executable. Besides its own code it holds
 the Rust crates listed below (from Cargo.lock, as in the SBOM
 mc-launcher-$version.cdx.json), the Rust standard library, and musl libc.

Files: *
Copyright: the mc-launcher authors
License: BSD-3-Clause

Files: rust-std/*
Copyright: the Rust Project Developers
License: MIT OR Apache-2.0

Files: musl/*
Copyright: Rich Felker, et al.
License: MIT
EOF
    while read -r name ver lic; do
        printf '\nFiles: crates/%s-%s/*\nCopyright: the %s authors\nLicense: %s\n' "$name" "$ver" "$name" "$lic"
    done < "$tmp/crates"
}
host_bin=$(bash scripts/build-static.sh)
for a in "${arches[@]}"; do
    da=$(deb_arch "$a")
    root=$tmp/deb-$da
    mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/mc-launcher"
    install -m 0755 "$dist/mc-launcher-$version-$a" "$root/usr/bin/mc-launcher"
    copyright > "$root/usr/share/doc/mc-launcher/copyright"
    chmod 0644 "$root/usr/share/doc/mc-launcher/copyright"
    # The man page, the README it points to, and the completion scripts
    # (made by this machine's build: they are the same for every arch).
    mkdir -p "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
        "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
    gzip -9n < doc/mc-launcher.1 > "$root/usr/share/man/man1/mc-launcher.1.gz"
    gzip -9n < README.rst > "$root/usr/share/doc/mc-launcher/README.rst.gz"
    install -m 0644 schema/mc-launcher.schema.json "$root/usr/share/doc/mc-launcher/"
    "$host_bin" completion bash > "$root/usr/share/bash-completion/completions/mc-launcher"
    "$host_bin" completion zsh > "$root/usr/share/zsh/vendor-completions/_mc-launcher"
    "$host_bin" completion fish > "$root/usr/share/fish/vendor_completions.d/mc-launcher.fish"
    find "$root/usr/share" -type f -exec chmod 0644 {} +
    size=$(du -k -s --apparent-size "$root/usr" | cut -f1)
    cat > "$root/DEBIAN/control" <<EOF
Package: mc-launcher
Version: $version
Architecture: $da
Maintainer: mc-launcher authors <mc-launcher@localhost>
Installed-Size: $size
Section: admin
Priority: optional
Description: PID 1 launcher for salt-configured Docker images
 mc-launcher prepares a makina-style container from its data volume
 (pillar, SSH keys, salt reconfigure), then supervises its processes
 circus-style as PID 1: signals, reaping, restarts, health, a control socket.
 A static musl executable: it needs no library from the image.
EOF
    (cd "$root" && find usr -type f | LC_ALL=C sort | xargs md5sum) > "$root/DEBIAN/md5sums"
    chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
    find "$root" -type d -exec chmod 0755 {} +
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    dpkg-deb --root-owner-group -Zxz --build "$root" "$dist/mc-launcher_${version}_$da.deb" >/dev/null
done

# --- checksums and signature ---------------------------------------------------
(cd "$dist" && find . -maxdepth 1 -type f -name 'mc-launcher*' -printf '%f\n' | LC_ALL=C sort |
    xargs sha256sum) > "$dist/SHA256SUMS"
if [ "$sign" = yes ]; then
    key=()
    [ -z "${MC_RELEASE_GPG_KEY:-}" ] || key=(--local-user "$MC_RELEASE_GPG_KEY")
    gpg --batch --yes --quiet "${key[@]}" --armor --detach-sign \
        --output "$dist/SHA256SUMS.asc" "$dist/SHA256SUMS"
fi

[ "$images" = no ] || make_images
echo "$dist"
