#!/usr/bin/env bash
# Measures the shipped checkpoints (assets/checkpoints: every finished run of scripts/retrain_all.sh,
# copied there by scripts/ship_checkpoints.sh) and writes the results the README's router tables
# quote, under assets/results/:
#   compare.md / compare.json   `moescope compare` over every router's seeds (and the ablations),
#                               whole held-out split, bootstrap intervals; assets/figures/comparison.svg
#   analyze/<router>-seed-N.json  `moescope analyze --json` of each checkpoint (Closer Look's checks)
#   claims.md                   the "What held and what did not" table (scripts/claims_table.py)
#   routers.md                  the "What the seven routers do here" table (scripts/routers_table.py)
#   scale/<cell>.json, scale.md `moescope compare --routers linear gru` in each depth/budget cell
#                               (ROOT/scale/<layers>L-<steps>/), and the table of GRU vs Linear per
#                               cell (scripts/scale_table.py; the 6-layer, 800-step cell is compare.json)
# and splices the three tables into README.md between their markers.
# ROOT=runs/retrain measures the runs in place instead (a run still training is skipped); either way
# a router folder's own checkpoint is its seed 1 (as ship_checkpoints.sh lays them out) and its
# seed-N subfolders the other seeds. MOESCOPE_BIN=path uses that binary instead of building.
# `evaluate_retrain.sh scale` measures only the depth/budget cells (and splices every table).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOESCOPE_BIN:-}
if [[ -z $BIN ]]; then
    swift build -c release --product moescope >&2
    BIN="$(swift build -c release --show-bin-path)/moescope"
fi
ROOT=${ROOT:-assets/checkpoints}
OUT=assets/results
mkdir -p "$OUT/analyze" "$OUT/scale"
PYTHON=${PYTHON:-/work/venv/bin/python}
command -v "$PYTHON" > /dev/null || PYTHON=python3

# has_run DIR: DIR (a router's folder in a cell) holds at least one finished seed.
has_run() {
    local model
    for model in "$1"/seed-*/model.safetensors; do
        [[ -f $model && ! -f $(dirname "$model")/training-state.safetensors ]] && return 0
    done
    return 1
}
scale_cells() {
    local cell name
    for cell in "$ROOT"/scale/*L-*/; do
        [[ -d $cell ]] || continue
        name=$(basename "$cell")
        if ! has_run "$cell/linear" || ! has_run "$cell/gru"; then
            echo "scale/$name: Linear or GRU has no finished seed yet, left out"
            continue
        fi
        "$BIN" compare --routers linear gru --checkpoints "${cell%/}" --json-file "$OUT/scale/$name.json" > "$OUT/scale/$name.md"
        echo "scale/$name measured"
    done
    "$PYTHON" scripts/scale_table.py "$OUT" > "$OUT/scale.md"
}
if [[ ${1:-} == scale ]]; then
    scale_cells
    "$PYTHON" scripts/splice_results.py "$OUT" README.md
    exit 0
fi
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
scale_cells
"$PYTHON" scripts/claims_table.py "$OUT" > "$OUT/claims.md"
"$PYTHON" scripts/routers_table.py "$OUT" > "$OUT/routers.md"
"$PYTHON" scripts/splice_results.py "$OUT" README.md
echo "wrote $OUT/compare.md, $OUT/compare.json, $OUT/analyze/*.json, $OUT/claims.md, $OUT/routers.md, $OUT/scale.md and spliced the tables into README.md"
