#!/usr/bin/env bash
# Regenerate scripts/hot-sections.txt, the code scripts/build-static.sh packs
# together at link time (gold's --section-ordering-file).
#
#   scripts/hot-sections.sh        (root; valgrind, python3; about 5 minutes)
#
# Why: the static binary's text is read from the file page by page, and the
# kernel's fault-around maps the 16 pages around each page that faults, so a
# function run once at start makes its whole 64 KiB window resident. Spread
# over the whole text, the code the launcher runs (start, the event loop,
# the control socket's server side, the stop) made nearly all 1.4 MiB of it
# resident. Packed together, only its own windows are: the cold code (help,
# completions, check/render, the ctl client, circus INI, cron, HTTP pages,
# error paths) is never read.
#
# How: it builds the release binary itself (x86_64, stripped) with a link
# map, runs it under valgrind's lackey, which lists every instruction
# executed, in the memory benchmark's scenario (bench/bench.py `memory`: 5
# `sleep 3600` services, idle, then `ctl status`, then SIGTERM), and writes
# the input section (a function sits alone in `.text.<symbol>`) of each of
# those instructions, per the map. It is the very build that is profiled:
# an unstripped one inlines differently. The names are globs: the crate
# disambiguators of Rust's v0 symbols (`Cs<hash>_`, which change with the
# compiler, the features and the dependencies' versions), the
# back-references after them (`B<offset>_`) and the `.<n>` LTO appends to
# local copies are `*`; each is also given as `.text.unlikely.<symbol>`,
# where LLVM puts what it thinks cold, so a rebuild that moves one still
# matches. The plain `.text` is the assembly files' (crt1's _start, musl's
# memcpy, memset, clone).
#
# When: after a change that adds or renames much of the code run at start,
# in the loop or at the stop (a stale list still links: a line that names
# no section is ignored, and code it misses lands among the cold code, so
# the RSS row of bench/run's `memory` creeps up again -- that is the sign).
# The static binary is rebuilt at the end (without the map).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
}
work=$(mktemp -d)
vg=
trap '[ -z "$vg" ] || kill "$vg" 2>/dev/null || true; rm -rf "$work"' EXIT

bin=$(MC_LINK_MAP="$work/map" bash scripts/build-static.sh)
cp "$bin" "$work/mc-launcher"
{
    printf 'control:\n  socket: %s/ctl.sock\npaths:\n  state: %s/state\n' "$work" "$work"
    printf 'ssh:\n  sshd: never\nshutdown:\n  timeout: 9s\nservices:\n'
    for i in 0 1 2 3 4; do printf '  s%d:\n    cmd: ["sleep", "3600"]\n' "$i"; done
} > "$work/mc.yml"
# Only the instruction addresses are kept (lackey prints "I  ADDR,LEN").
MC_LOG=warn valgrind --tool=lackey --trace-mem=yes --log-fd=3 \
    "$work/mc-launcher" -c "$work/mc.yml" --root "$work" 3> >(awk '$1 == "I" {sub(/,.*/, "", $2); if (!($2 in s)) {s[$2]; print $2}}' > "$work/ran") \
    >"$work/vg.log" 2>&1 &
vg=$!
# Up when `ctl status` shows the five running (that is the status asked).
n=0
for _ in $(seq 600); do
    n=$("$work/mc-launcher" -c "$work/mc.yml" ctl status 2>/dev/null | grep -c ' running ' || true)
    [ "$n" -ge 5 ] && break
    sleep 0.2
done
[ "$n" -ge 5 ] || { echo "hot-sections: the services did not come up" >&2; exit 1; }
sleep 1
"$work/mc-launcher" -c "$work/mc.yml" ctl status >/dev/null
kill -TERM "$vg"
wait "$vg" || { cat "$work/vg.log" >&2; exit 1; }
vg=
sleep 1 # the awk behind the process substitution finishing its file

python3 - "$work/map" "$work/ran" > "$work/hot" <<'PY'
import bisect, re, sys
# gold's map: " .text.NAME  0xADDR  0xSIZE  FILE", the name alone on its line when long.
secs, pend = [], None
for line in open(sys.argv[1]):
    m = re.match(r" (\.text\S*)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s)?", line)
    if m and m.group(2):
        secs.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1)))
    elif m:
        pend = m.group(1)
        continue
    elif pend:
        m = re.match(r"\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s", line)
        if m:
            secs.append((int(m.group(1), 16), int(m.group(2), 16), pend))
    pend = None
secs = sorted(s for s in secs if s[0] and s[1])
starts = [s[0] for s in secs]
hot = set()
for a in open(sys.argv[2]):
    a = int(a, 16)
    i = bisect.bisect_right(starts, a) - 1
    if i >= 0 and a < secs[i][0] + secs[i][1]:
        hot.add(secs[i][2])
for name in hot:
    sym = re.sub(r"^\.text\.(unlikely\.)?", "", name)
    if name == ".text":
        print(".text")
    elif sym.startswith("_R"):
        sym = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", sym)
        sym = re.sub(r"B[0-9A-Za-z]*_", "B*_", sym)
        sym = re.sub(r"\.[0-9]+$", "", sym) + "*"
        print(".text." + sym)
        print(".text.unlikely." + sym)
    else:
        print(name)
PY
{
    echo "# Made by scripts/hot-sections.sh (see there): the sections of the code the"
    echo "# launcher runs, linked together by scripts/build-static.sh. Do not edit."
    LC_ALL=C sort -u "$work/hot"
} > scripts/hot-sections.txt
echo "hot-sections: $(grep -vc '^#' scripts/hot-sections.txt) patterns in scripts/hot-sections.txt" >&2
bash scripts/build-static.sh >/dev/null
