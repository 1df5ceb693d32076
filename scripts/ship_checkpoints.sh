#!/usr/bin/env bash
# Copies every finished run of scripts/retrain_all.sh into assets/checkpoints/ (F16 weights, config,
# tokenizer; ~10 MB a run), so the results can be re-measured after runs/ is gone:
#   runs/retrain/<router>/seed-1            → assets/checkpoints/<router>/         (the shipped model
#                                              the explorer and every command open by default)
#   runs/retrain/<router>/seed-N, N > 1     → assets/checkpoints/<router>/seed-N/
#   runs/retrain/ablations/<name>/seed-N    → assets/checkpoints/ablations/<name>/seed-N/
# `moescope compare` reads a router folder's own checkpoint as seed 1 and its seed-N subfolders as
# the other seeds. Unfinished runs are left alone. Each run's commit (the binary it was trained
# with) is listed in assets/checkpoints/TRAINED_AT.md.
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
    echo "| ${from#runs/retrain/} | $to | $commits |" >> assets/checkpoints/TRAINED_AT.md.tmp
    echo "shipped $from → $to (commit $commits)"
}
{
    echo "# Where each shipped checkpoint was trained"
    echo
    echo "Written by scripts/ship_checkpoints.sh: each run of scripts/retrain_all.sh (800 steps, default shape,"
    echo "\`moescope train --router R --seed S\` plus the options in its name) and the commit of the binary it"
    echo "was trained with."
    echo
    echo "| run | folder | commit |"
    echo "|---|---|---|"
} > assets/checkpoints/TRAINED_AT.md.tmp
for dir in runs/retrain/*/seed-*; do
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
mv assets/checkpoints/TRAINED_AT.md.tmp assets/checkpoints/TRAINED_AT.md
