#!/usr/bin/env bash
# Copies every finished run of scripts/retrain_all.sh into assets/checkpoints/ (F16 weights, config,
# tokenizer; ~10 MB a run), so the results can be re-measured after runs/ is gone:
#   runs/retrain/<router>/seed-1            → assets/checkpoints/<router>/         (the shipped model
#                                              the explorer and every command open by default)
#   runs/retrain/<router>/seed-N, N > 1     → assets/checkpoints/<router>/seed-N/
#   runs/retrain/ablations/<name>/seed-N    → assets/checkpoints/ablations/<name>/seed-N/
#   runs/retrain/scale/<cell>/<router>/seed-N → assets/checkpoints/scale/<cell>/<router>/seed-N/
# `moescope compare` reads a router folder's own checkpoint as seed 1 and its seed-N subfolders as
# the other seeds. Unfinished runs are left alone. Each run's commit (the binary it was trained
# with) is listed in assets/checkpoints/TRAINED_AT.md; rows of runs shipped earlier whose runs/ folder
# is gone (a new machine) are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
finished() { [[ -f $1/model.safetensors && ! -f $1/training-state.safetensors ]]; }
ship() {
    local from=$1 to=$2
    mkdir -p "$to"
    for file in config.json model.safetensors tokenizer.json; do cp "$from/$file" "$to/$file"; done
    # A resumed run lists each binary it ran with, in order.
    local commits
    commits=$(awk '!seen[$0]++' "$from/commit.txt" | paste -sd, - | sed 's/,/, /g')
    echo "| ${from#runs/retrain/} | $to | $commits |" >> "$rows"
    echo "shipped $from → $to (commit $commits)"
}
{
    echo "# Where each shipped checkpoint was trained"
    echo
    echo "Written by scripts/ship_checkpoints.sh: each run of scripts/retrain_all.sh (800 steps, default shape,"
    echo "\`moescope train --router R --seed S\` plus the options in its name; scale/<layers>L-<steps>/ runs use"
    echo "that depth and step count) and the commit of the binary it was trained with."
    echo
    echo "| run | folder | commit |"
    echo "|---|---|---|"
} > assets/checkpoints/TRAINED_AT.md.tmp
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for dir in runs/retrain/*/seed-*; do
    [[ -d $dir ]] || continue
    router=$(basename "$(dirname "$dir")") seed=$(basename "$dir")
    [[ $router == ablations ]] && continue
    finished "$dir" || { echo "$router/$seed: not finished, left alone"; continue; }
    if [[ $seed == seed-1 ]]; then ship "$dir" "assets/checkpoints/$router"; else ship "$dir" "assets/checkpoints/$router/$seed"; fi
done
for dir in runs/retrain/ablations/*/seed-*; do
    [[ -d $dir ]] || continue
    name=$(basename "$(dirname "$dir")") seed=$(basename "$dir")
    finished "$dir" || { echo "ablations/$name/$seed: not finished, left alone"; continue; }
    ship "$dir" "assets/checkpoints/ablations/$name/$seed"
done
for dir in runs/retrain/scale/*/*/seed-*; do
    [[ -d $dir ]] || continue
    run=${dir#runs/retrain/}
    finished "$dir" || { echo "$run: not finished, left alone"; continue; }
    ship "$dir" "assets/checkpoints/$run"
done
# Earlier rows (from the old TRAINED_AT.md) whose run was not shipped now keep their place.
if [[ -f assets/checkpoints/TRAINED_AT.md ]]; then
    grep '^| [a-z]' assets/checkpoints/TRAINED_AT.md | grep -v '^| run |' | while IFS= read -r line; do
        run=$(echo "$line" | cut -d'|' -f2 | xargs)
        grep -q "^| $run |" "$rows" || echo "$line"
    done > "$rows.kept"
    cat "$rows.kept" "$rows" > "$rows.all" && mv "$rows.all" "$rows" && rm -f "$rows.kept"
fi
sort -t'|' -k2,2 -s "$rows" | awk -F'|' '{print ($2 ~ /^ (scale|ablations)\//) ? "2" $0 : "1" $0}' | sort -s -k1,1 | cut -c2- >> assets/checkpoints/TRAINED_AT.md.tmp
mv assets/checkpoints/TRAINED_AT.md.tmp assets/checkpoints/TRAINED_AT.md
