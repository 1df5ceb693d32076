#!/usr/bin/env bash
# CPU smoke run of the PyTorch trainer, by hand (not CI): 2 processes under torchrun, 20 steps of
# the default config (GRU router, seed 1), interrupted after step 8 and resumed, the result opened
# in moescope, and its loss curve set beside `moescope train` on the same seed.
#
#   bash scripts/torch_moe/smoke.sh [OUT_DIR]        (from the repository root; default runs/torch-smoke)
#
# Needs a release build of moescope (swift build -c release) and Python with torch and safetensors
# ($PYTHON, default /work/venv/bin/python or python3). About 2–4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/torch-smoke}
PYTHON=${PYTHON:-$( [ -x /work/venv/bin/python ] && echo /work/venv/bin/python || echo python3 )}
MOESCOPE=${MOESCOPE:-.build/release/moescope}
STEPS=20
[ -x "$MOESCOPE" ] || { echo "error: $MOESCOPE not found — run swift build -c release first" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
export PYTHONPATH=scripts OMP_NUM_THREADS=1
torchrun() { "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 -m torch_moe.train "$@"; }
TRAIN=(--router gru --steps $STEPS --seed 1 --dtype f32 --save-every 5)

echo "== 1. uninterrupted: 2 processes, $STEPS steps"
torchrun "${TRAIN[@]}" --out "$OUT/straight" >"$OUT/straight.log" 2>&1
grep -a "^training\|^trained" "$OUT/straight.log"

echo "== 2. the same run, interrupted (SIGINT) after step 8, then resumed"
setsid "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 -m torch_moe.train "${TRAIN[@]}" \
    --out "$OUT/gru" >"$OUT/interrupted.log" 2>&1 &
LAUNCHER=$!
until [ -f "$OUT/gru/log.jsonl" ] && [ "$(wc -l <"$OUT/gru/log.jsonl")" -ge 8 ]; do
    kill -0 $LAUNCHER 2>/dev/null || { echo "error: the run ended before step 8" >&2; cat "$OUT/interrupted.log" >&2; exit 1; }
    sleep 0.2
done
kill -INT -- -"$LAUNCHER"
status=0; wait $LAUNCHER || status=$?
grep -a -m1 "stopped by signal" "$OUT/interrupted.log"
echo "launcher exit status $status; state: $(ls "$OUT/gru/training-state.pt")"
torchrun "${TRAIN[@]}" --out "$OUT/gru" --resume >"$OUT/resumed.log" 2>&1
grep -a "^training\|^trained" "$OUT/resumed.log"

echo "== 3. moescope's own trainer, same seed and options"
# Its progress line is drawn for a terminal every step; `script` gives it one, and we keep the lines.
script -qec "$MOESCOPE train --router gru --steps $STEPS --seed 1 --dtype f32 --out $OUT/moescope" "$OUT/moescope.log" >/dev/null
tail -c 300 "$OUT/moescope.log" | tr '\r' '\n' | grep -a trained

echo "== 4. the PyTorch checkpoint in moescope"
"$MOESCOPE" trace --checkpoint "$OUT/gru" --text "The router sends every token to two experts." >"$OUT/trace.txt"
head -6 "$OUT/trace.txt"
"$MOESCOPE" analyze --checkpoint "$OUT/gru" --max-tokens 2048 >"$OUT/analyze.md" 2>/dev/null
sed -n 7,14p "$OUT/analyze.md"
"$MOESCOPE" compare --checkpoints "$OUT" --routers gru --max-tokens 4096

echo "== 5. loss curves"
"$PYTHON" -m torch_moe.compare_runs "$OUT/gru" "$OUT/moescope" "$OUT/moescope.log" "$OUT/straight"
