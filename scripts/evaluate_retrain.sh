#!/usr/bin/env bash
# Measures the shipped checkpoints (assets/checkpoints: every finished run of scripts/retrain_all.sh,
# copied there by scripts/ship_checkpoints.sh) and writes the results the README's router tables
# quote, under assets/results/:
#   compare.md / compare.json   `moescope compare` over every router's seeds (and the ablations),
#                               whole held-out split, bootstrap intervals; assets/figures/comparison.svg
#   analyze/<router>-seed-N.json  `moescope analyze --json` of each checkpoint (Closer Look's checks)
#   claims.md                   the "What held and what did not" table (scripts/claims_table.py)
#   routers.md                  the "What the seven routers do here" table (scripts/routers_table.py)
# and splices the three tables into README.md between their markers.
# ROOT=runs/retrain measures the runs in place instead (a run still training is skipped); either way
# a router folder's own checkpoint is its seed 1 (as ship_checkpoints.sh lays them out) and its
# seed-N subfolders the other seeds. MOESCOPE_BIN=path uses that binary instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOESCOPE_BIN:-}
if [[ -z $BIN ]]; then
    swift build -c release --product moescope >&2
    BIN="$(swift build -c release --show-bin-path)/moescope"
fi
ROOT=${ROOT:-assets/checkpoints}
OUT=assets/results
mkdir -p "$OUT/analyze"
ablations=()
for dir in "$ROOT"/ablations/*/; do
    [[ -d $dir ]] || continue
    ls "$dir"/seed-*/model.safetensors > /dev/null 2>&1 || continue
    ablations+=(--run "$(basename "$dir")=${dir%/}")
done
"$BIN" compare --checkpoints "$ROOT" "${ablations[@]}" --json-file "$OUT/compare.json" --figures assets/figures > "$OUT/compare.md"
for model in "$ROOT"/*/model.safetensors "$ROOT"/*/seed-*/model.safetensors; do
    [[ -f $model ]] || continue
    dir=$(dirname "$model")
    [[ -f $dir/training-state.safetensors ]] && continue
    if [[ $(basename "$dir") == seed-* ]]; then
        name="$(basename "$(dirname "$dir")")-$(basename "$dir")"
    else
        [[ -f $dir/seed-1/model.safetensors ]] && continue  # the same seed twice: counted once, as compare does
        name="$(basename "$dir")-seed-1"
    fi
    [[ $name == ablations-* ]] && continue
    [[ -f $OUT/analyze/$name.json && $OUT/analyze/$name.json -nt $model ]] && continue
    "$BIN" analyze --checkpoint "$dir" --json > "$OUT/analyze/$name.json.tmp" && mv "$OUT/analyze/$name.json.tmp" "$OUT/analyze/$name.json"
done
PYTHON=${PYTHON:-/work/venv/bin/python}
"$PYTHON" scripts/claims_table.py "$OUT" > "$OUT/claims.md"
"$PYTHON" scripts/routers_table.py "$OUT" > "$OUT/routers.md"
"$PYTHON" scripts/splice_results.py "$OUT" README.md
echo "wrote $OUT/compare.md, $OUT/compare.json, $OUT/analyze/*.json, $OUT/claims.md, $OUT/routers.md and spliced the tables into README.md"
