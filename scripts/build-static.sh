#!/usr/bin/env bash
# The release artifact: a static, libc-free (musl, linked in) mc-launcher
# that runs in any image -- Debian, Alpine, distroless, scratch.
#
#   scripts/build-static.sh [--fault-injection] [--target ARCH]
#
# Prints the path of the binary on stdout (everything else goes to stderr):
#   ${CARGO_TARGET_DIR:-target}/static/mc-launcher          (x86_64)
#   ${CARGO_TARGET_DIR:-target}/static/ARCH/mc-launcher     (--target ARCH)
# --fault-injection builds the test variant (cargo feature fault-injection,
# never shipped) as .../mc-launcher-fault-injection instead.
# --target ARCH: x86_64 (the default), aarch64 or armv7 (cross-linked by
# Debian's gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf against
# musl-dev:arm64 / musl-dev:armhf, multiarch packages: the script adds the
# foreign architecture to dpkg for it).
#
# How: rustup cannot fetch the musl std here, so this uses Debian's own
# toolchain, rustc-web + cargo-web (1.96), and rebuilds std from Debian's
# copy of its source (rust-web-src) for x86_64-unknown-linux-musl with
# -Zbuild-std (RUSTC_BOOTSTRAP=1 lets a stable compiler take -Z flags, as
# fuzz/run.sh does for cargo fuzz), linked by musl-gcc (musl-tools) against
# Debian's musl. Cargo profile `static` (Cargo.toml): opt-level z, fat LTO,
# one codegen unit, panic = abort, stripped. It installs what it lacks from
# Debian (quietly) and is a no-op cargo check when the binary is current.
# MC_BUILD_JOBS (default 2) bounds cargo's parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--fault-injection] [--target x86_64|aarch64|armv7]" >&2; exit 2; }
variant=mc-launcher
features=()
arch=x86_64
while [ $# -gt 0 ]; do
    case "$1" in
        --fault-injection) variant=mc-launcher-fault-injection; features=(--features fault-injection) ;;
        --target) [ $# -ge 2 ] || usage; arch=${2%%-*}; shift ;;
        --target=*) arch=${1#--target=}; arch=${arch%%-*} ;;
        *) usage ;;
    esac
    shift
done

# Per arch: the Rust target, the C compiler that links it (a musl-gcc: gcc
# with musl's specs file), the Debian packages both need.
tdir=${CARGO_TARGET_DIR:-$PWD/target}
case "$tdir" in /*) ;; *) tdir=$PWD/$tdir ;; esac
link=$tdir/static-link
case "$arch" in
    x86_64)
        target=x86_64-unknown-linux-musl
        cc=musl-gcc
        tools=(musl-tools)
        out=$tdir/static/$variant
        ;;
    aarch64 | armv7)
        # The cross gcc of the GNU triplet, given musl's specs file from the
        # foreign-arch musl-dev (cargo wants one program as the linker).
        case "$arch" in
            aarch64) target=aarch64-unknown-linux-musl; debarch=arm64; gnu=aarch64-linux-gnu; musl=aarch64-linux-musl ;;
            armv7) target=armv7-unknown-linux-musleabihf; debarch=armhf; gnu=arm-linux-gnueabihf; musl=arm-linux-musleabihf ;;
        esac
        link=$tdir/static-link/$arch
        cc=$link/$arch-musl-gcc
        tools=("gcc-$gnu" "musl-dev:$debarch")
        out=$tdir/static/$arch/$variant
        ;;
    *) echo "build-static: no musl cross toolchain for '$arch' here (x86_64, aarch64, armv7)" >&2; exit 2 ;;
esac

# --- the Debian toolchain ---------------------------------------------------
src=/usr/lib/rustlib/src/rust
need=()
for pkg in rustc-web cargo-web rust-web-src "${tools[@]}"; do
    dpkg-query -W -f '${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "build-static: installing ${need[*]} from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    case " ${need[*]} " in
        *":${debarch:-}"*) dpkg --print-foreign-architectures | grep -qx "$debarch" || {
            dpkg --add-architecture "$debarch"
            apt-get update -qq
        } ;;
    esac
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    }
fi
# std is compiled from rust-web-src by this rustc: they must be the same
# release (a std from another release does not build, or builds wrong).
rustc_release=$(/usr/bin/rustc -vV | sed -n 's/^release: //p')
src_release=$(cat "$src/src/version" 2>/dev/null || true)
if [ "$rustc_release" != "$src_release" ]; then
    echo "build-static: /usr/bin/rustc is $rustc_release but $src holds std $src_release:" \
        "install matching rustc-web and rust-web-src" >&2
    exit 1
fi

# --- the unwinder std links for musl ----------------------------------------
# std for *-musl always links libunwind.a (LLVM's, shipped by rustup, not by
# Debian for musl). With panic = abort nothing unwinds, and with std's
# `backtrace` feature off (see -Zbuild-std-features below) no backtrace is
# ever captured; only std's backtrace printer still names two symbols. This
# stand-in defines them as "no frames", which is what that code would get
# from a stripped binary anyway.
mkdir -p "$link" "$(dirname "$out")"
if [ "$arch" != x86_64 ]; then
    # Debian's musl-gcc for a foreign arch is its specs file (musl-dev:ARCH)
    # given to the cross gcc; cargo wants one program as the linker.
    wrapper="#!/bin/sh
exec $gnu-gcc -specs /usr/lib/$musl/musl-gcc.specs \"\$@\""
    if [ "$(cat "$cc" 2>/dev/null)" != "$wrapper" ]; then
        printf '%s\n' "$wrapper" > "$cc.tmp"
        chmod 755 "$cc.tmp"
        mv -f "$cc.tmp" "$cc"
    fi
fi
stub_c='/* mc-launcher: the unwinder symbols std names with panic=abort. */
typedef int (*trace_fn)(void *, void *);
int _Unwind_Backtrace(trace_fn f, void *arg) { (void)f; (void)arg; return 5; /* _URC_END_OF_STACK */ }
unsigned long _Unwind_GetIP(void *ctx) { (void)ctx; return 0; }
/* The personality routine, which gold keeps (GNU ld dropped it with the
   unwind tables nothing reads), names these; it is never called. */
unsigned long _Unwind_GetIPInfo(void *ctx, int *before) { (void)ctx; *before = 0; return 0; }
void *_Unwind_GetLanguageSpecificData(void *ctx) { (void)ctx; return 0; }
unsigned long _Unwind_GetRegionStart(void *ctx) { (void)ctx; return 0; }
unsigned long _Unwind_GetTextRelBase(void *ctx) { (void)ctx; return 0; }
unsigned long _Unwind_GetDataRelBase(void *ctx) { (void)ctx; return 0; }
void _Unwind_SetGR(void *ctx, int i, unsigned long v) { (void)ctx; (void)i; (void)v; }
void _Unwind_SetIP(void *ctx, unsigned long v) { (void)ctx; (void)v; }
#ifdef __arm__
/* ARM EHABI: the unwind tables name the personality routines; nothing unwinds. */
void __aeabi_unwind_cpp_pr0(void) {}
void __aeabi_unwind_cpp_pr1(void) {}
/* ARM reads the IP through this one: register 15 is 0, as above. */
int _Unwind_VRS_Get(void *ctx, int cls, unsigned reg, int rep, void *val) {
    (void)ctx; (void)cls; (void)reg; (void)rep; *(unsigned *)val = 0; return 0; }
/* And the personality routine gold keeps names these two; never called. */
int _Unwind_VRS_Set(void *ctx, int cls, unsigned reg, int rep, void *val) {
    (void)ctx; (void)cls; (void)reg; (void)rep; (void)val; return 0; }
int __gnu_unwind_frame(void *ucbp, void *ctx) { (void)ucbp; (void)ctx; return 9; /* _URC_FAILURE */ }
#endif'
if [ ! -f "$link/libunwind.a" ] || [ "$(cat "$link/unwind-stub.c" 2>/dev/null)" != "$stub_c" ]; then
    printf '%s' "$stub_c" > "$link/unwind-stub.c"
    "$cc" -Os -c "$link/unwind-stub.c" -o "$link/unwind-stub.o"
    rm -f "$link/libunwind.a"
    ar rcs "$link/libunwind.a" "$link/unwind-stub.o"
fi

# --- build --------------------------------------------------------------------
# Only Debian's tools: no rustup proxy on PATH, no rustup toolchain override.
# relocation-model=static: a plain static executable (musl-gcc cannot link a
# static PIE: it would ask for /lib/ld-musl-x86_64.so.1, which scratch lacks),
# which also starts without self-relocating, so no relocated page is dirty.
# Reproducible: the same bytes from any target dir. No path of this machine
# is left in the binary (panic locations name /build, /cargo and /rustc
# instead of the clone, ~/.cargo and Debian's std source; the target dir
# holds nothing that is compiled in), and build.rs takes the build date from
# SOURCE_DATE_EPOCH (default: the commit's date), never from the clock.
#
# Linked by gold (binutils' ld.gold, and the cross binutils' for aarch64 and
# armv7: nothing more to install) for --section-ordering-file, which GNU ld
# lacks: the code the launcher runs (scripts/hot-sections.txt, made by
# scripts/hot-sections.sh) is laid out together, so the rest of the text --
# help, completions, check, the ctl client, circus INI, cron, HTTP pages,
# error paths -- is never read in: the kernel maps text in 64 KiB windows
# around each page that faults (fault-around), and before this the code run
# at start was spread over nearly every window (RSS 1.8 MiB with 5
# services). A line of that file naming no section is ignored, so a stale
# list still links; build.rs relinks when the file changes.
# MC_LINK_MAP=FILE (for scripts/hot-sections.sh) also writes the link map.
order="-C link-arg=-fuse-ld=gold -C link-arg=-Wl,--rosegment -C link-arg=-Wl,--section-ordering-file=$PWD/scripts/hot-sections.txt"
[ -z "${MC_LINK_MAP:-}" ] || order="$order -C link-arg=-Wl,-Map=$MC_LINK_MAP"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
remap="--remap-path-prefix=$PWD=/build/mc-launcher --remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$src=/rustc/src"
tvar=$(echo "$target" | tr 'a-z-' 'A-Z_')
sde=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
env -u RUSTUP_TOOLCHAIN -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    PATH=/usr/bin:/bin \
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_DIR="$tdir" SOURCE_DATE_EPOCH="$sde" \
    "CARGO_TARGET_${tvar}_LINKER=$cc" \
    "CARGO_TARGET_${tvar}_RUSTFLAGS=-C link-self-contained=no -C relocation-model=static -L native=$link $order $remap" \
    /usr/bin/cargo build --quiet --locked -j "${MC_BUILD_JOBS:-2}" \
    --profile static --target "$target" --bin mc-launcher "${features[@]}" \
    -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size >&2

built=$tdir/$target/static/mc-launcher
if ! cmp -s "$built" "$out"; then
    cp -f "$built" "$out.tmp"
    mv -f "$out.tmp" "$out"
fi
echo "$out"
