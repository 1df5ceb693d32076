#!/usr/bin/env bash
# Measures the checkpoints scripts/retrain_all.sh has finished so far and writes the results the
# README's router tables quote, under assets/results/:
#   compare.md / compare.json   `moescope compare` over every router's seed-N checkpoints (and the
#                               ablations), whole held-out split, bootstrap intervals
#   analyze/<router>-seed-N.json  `moescope analyze --json` of each checkpoint (Closer Look's checks)
#   claims.md                   the "What held and what did not" table (scripts/claims_table.py)
# and splices compare.md and claims.md into README.md between their markers.
# Runs that are still training are skipped; re-run when more have finished.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOESCOPE_BIN:-}
if [[ -z $BIN ]]; then
    swift build -c release --product moescope >&2
    BIN="$(swift build -c release --show-bin-path)/moescope"
fi
ROOT=runs/retrain
OUT=assets/results
mkdir -p "$OUT/analyze"
ablations=()
for dir in "$ROOT"/ablations/*/; do
    [[ -d $dir ]] || continue
    ls "$dir"/seed-*/model.safetensors > /dev/null 2>&1 || continue
    ablations+=(--run "$(basename "$dir")=${dir%/}")
done
"$BIN" compare --checkpoints "$ROOT" "${ablations[@]}" --json-file "$OUT/compare.json" > "$OUT/compare.md"
for model in "$ROOT"/*/seed-*/model.safetensors; do
    dir=$(dirname "$model")
    [[ -f $dir/training-state.safetensors ]] && continue
    name="$(basename "$(dirname "$dir")")-$(basename "$dir")"
    [[ -f $OUT/analyze/$name.json && $OUT/analyze/$name.json -nt $model ]] && continue
    "$BIN" analyze --checkpoint "$dir" --json > "$OUT/analyze/$name.json.tmp" && mv "$OUT/analyze/$name.json.tmp" "$OUT/analyze/$name.json"
done
PYTHON=${PYTHON:-/work/venv/bin/python}
"$PYTHON" scripts/claims_table.py "$OUT" > "$OUT/claims.md"
"$PYTHON" scripts/splice_results.py "$OUT" README.md
echo "wrote $OUT/compare.md, $OUT/compare.json, $OUT/analyze/*.json, $OUT/claims.md and spliced the tables into README.md"
