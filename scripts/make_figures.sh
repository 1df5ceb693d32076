#!/usr/bin/env bash
# Regenerates assets/figures/ (the figures the README shows): `analyze --figures` for the
# shipped GRU and Linear checkpoints on the held-out split (8 192 tokens, 1 024 per domain),
# with the Markdown report beside them. The router comparison (comparison.svg) is drawn by
# scripts/evaluate_retrain.sh, from the same `compare` run as the README's tables.
# About a minute after the release build on this 2-core machine. MOESCOPE_BIN=path uses that
# binary instead of building (e.g. the one scripts/retrain_all.sh copied to runs/bin/).
set -euo pipefail
cd "$(dirname "$0")/.."
moescope=${MOESCOPE_BIN:-}
if [[ -z $moescope ]]; then
    swift build -c release --product moescope
    moescope=.build/release/moescope
fi
for router in gru linear; do
    mkdir -p "assets/figures/$router"
    "$moescope" analyze --router "$router" --assets assets --figures "assets/figures/$router" > "assets/figures/$router/analysis.md"
done
