#!/usr/bin/env bash
# analyze throughput on a long text, this tree against a baseline commit (default 260e0d6, the
# token-by-token analyze issue 13 measured), one after the other in the same run:
#   scripts/bench_analyze.sh [BASELINE_COMMIT] [TEXT_BYTES] [ROUTER]
# Builds the baseline in a temporary git worktree (release) unless $BASELINE_BIN names a binary,
# builds this tree (release) unless $NEW_BIN names one, writes a TEXT_BYTES (default 1,000,000)
# text taken from the corpus's train split (the eight domains' documents in turn, sorted by
# domain name, joined by newlines, cut at a character boundary) and runs
#   moescope analyze --checkpoint assets/checkpoints/ROUTER --file TEXT --json
# with both under /usr/bin/time, printing wall time, user+sys CPU, tokens per second of each,
# the ratios, the load average before each run, and whether the two JSON reports agree
# (numbers within 1e-4; the Closer Look columns of 260e0d6 cover every token, not the first 8,192,
# and its Inner/Outer Balance are exact medians where later trees read a 4,096-bin sketch's: to 0.34 %).
# Release builds; a busy machine changes the wall times far more than the CPU times, so the
# per-CPU-second ratio is the steadier figure.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=${1:-260e0d6}
bytes=${2:-1000000}
router=${3:-gru}
work=$(mktemp -d /tmp/bench-analyze.XXXXXX)

python3 - "$bytes" "$work/text.txt" <<'EOF'
import json, sys
limit, out = int(sys.argv[1]), sys.argv[2]
docs = {}
for line in open("assets/corpus/corpus.jsonl", encoding="utf-8"):
    d = json.loads(line)
    if d["split"] == "train":
        docs.setdefault(d["domain"], []).append(d["text"])
iters = {k: iter(v) for k, v in sorted(docs.items())}
parts, size = [], 0
while size < limit and iters:
    for k in list(iters):
        t = next(iters[k], None)
        if t is None:
            del iters[k]
            continue
        parts.append(t)
        size += len(t.encode()) + 1
data = "\n".join(parts).encode()[:limit].decode("utf-8", "ignore").encode()
open(out, "wb").write(data)
EOF

if [ -z "${BASELINE_BIN:-}" ]; then
    git worktree add --detach "$work/base" "$baseline" >/dev/null
    trap 'git worktree remove --force "$work/base"' EXIT
    (cd "$work/base" && swift build -c release --product moescope >/dev/null)
    cp "$work/base/.build/release/moescope" "$work/baseline-moescope"
    BASELINE_BIN="$work/baseline-moescope"
fi
if [ -z "${NEW_BIN:-}" ]; then
    swift build -c release --product moescope >/dev/null
    NEW_BIN=.build/release/moescope
fi

run() {  # name binary
    echo "load before $1: $(cut -d' ' -f1-3 /proc/loadavg)"
    /usr/bin/time -f "%e %U %S %M" -o "$work/$1.time" "$2" analyze --checkpoint "assets/checkpoints/$router" \
        --file "$work/text.txt" --json >"$work/$1.json" 2>"$work/$1.err"
    read -r wall user sys rss <"$work/$1.time"
    tokens=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"])' "$work/$1.json")
    python3 - "$1" "$wall" "$user" "$sys" "$rss" "$tokens" <<'EOF'
import sys
name, wall, user, sys_, rss, tokens = sys.argv[1], *map(float, sys.argv[2:])
cpu = user + sys_
print(f"{name}: {int(tokens)} tokens, wall {wall:.1f} s ({tokens / wall:,.0f} tok/s), "
      f"CPU {cpu:.1f} s ({tokens / cpu:,.0f} tok per CPU-second), peak RSS {rss / 1024:.0f} MB")
EOF
}
run baseline "$BASELINE_BIN"
run new "$NEW_BIN"
python3 - "$work" <<'EOF'
import json, sys
w = sys.argv[1]
t = {n: list(map(float, open(f"{w}/{n}.time").read().split())) for n in ("baseline", "new")}
print(f"ratio: wall {t['baseline'][0] / t['new'][0]:.1f}x, "
      f"CPU {(t['baseline'][1] + t['baseline'][2]) / (t['new'][1] + t['new'][2]):.1f}x")
a, b = (json.load(open(f"{w}/{n}.json")) for n in ("baseline", "new"))
worst = [0.0, ""]
def walk(x, y, path):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in x.keys() & y.keys():
            walk(x[k], y[k], f"{path}.{k}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (p, q) in enumerate(zip(x, y)):
            walk(p, q, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        if "norm" in path:   # Closer Look columns: every token (260e0d6) vs the first 8,192
            return
        d = abs(x - y) / max(1.0, abs(x), abs(y))
        if d > worst[0]:
            worst[:] = [d, f"{path}: {x} vs {y}"]
walk(a, b, "")
print(f"largest relative difference outside the Closer Look columns: {worst[0]:.2g} ({worst[1]})")
EOF
echo "files in $work"
