#!/usr/bin/env bash
# Copies each finished seed-1 run of scripts/retrain_all.sh into assets/checkpoints/<router>/ (the
# checkpoints moescope ships and opens by default). Unfinished runs are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in runs/retrain/*/seed-1; do
    router=$(basename "$(dirname "$dir")")
    [[ $router == ablations ]] && continue
    [[ -f $dir/model.safetensors && ! -f $dir/training-state.safetensors ]] || { echo "$router: seed 1 not finished, kept the shipped one"; continue; }
    mkdir -p "assets/checkpoints/$router"
    for file in config.json model.safetensors tokenizer.json; do cp "$dir/$file" "assets/checkpoints/$router/$file"; done
    echo "$router: shipped $dir (commit $(tail -1 "$dir/commit.txt"))"
done
