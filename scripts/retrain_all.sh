#!/usr/bin/env bash
# Retrains every router for the comparison in README's "Router comparison", one run at a time
# (each run uses all cores), resumably: a finished run (model.safetensors present) is skipped, an
# interrupted one (training-state.safetensors present) continues with --resume, so re-running this
# script after a kill or a reboot picks up where it stopped.
#
#   nohup bash scripts/retrain_all.sh [GROUP…] > runs/retrain/log.txt 2>&1 &
#
# GROUPs (default: all, in this order): routers (seed 1 of the seven, seeds 2–3 of Linear and GRU),
# ablations (RMoE's), other_seeds (seeds 2–3 of the other five), scale (Linear and GRU at 12
# layers and at 3,200 steps).
#
# Order: seed 1 of all seven routers (the shipped checkpoints), seeds 2 and 3 of Linear and GRU,
# the RMoE ablations (6 layers, 800 steps, seed 1), then seeds 2 and 3 of the others. Same recipe as the shipped checkpoints: 800 steps,
# the default shape and optimiser. Each run's log is runs/retrain/<run>/train.log, the commit it
# was built from is in runs/retrain/<run>/commit.txt.
#
# MOESCOPE_BIN=path uses that binary (MOESCOPE_COMMIT=the commit it was built from); otherwise the release build is made and copied to
# runs/bin/moescope-<commit> so rebuilding the worktree never changes a running job's binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=runs/retrain
mkdir -p "$ROOT" runs/bin

COMMIT=${MOESCOPE_COMMIT:-$(git rev-parse --short HEAD)}
if [[ -z "${MOESCOPE_COMMIT:-}" ]] && ! git diff --quiet HEAD -- Sources Package.swift; then COMMIT="$COMMIT-dirty"; fi
if [[ -z "${MOESCOPE_BIN:-}" ]]; then
    swift build -c release --product moescope >&2
    MOESCOPE_BIN=runs/bin/moescope-$COMMIT
    cp "$(swift build -c release --show-bin-path)/moescope" "$MOESCOPE_BIN"
fi
echo "$(date -u +%FT%TZ) retrain_all: binary $MOESCOPE_BIN (commit $COMMIT)"

STEPS=800

# run NAME ARGS… — trains runs/retrain/NAME unless it is finished, resuming an interrupted run.
run() {
    local name=$1; shift
    local dir=$ROOT/$name
    if [[ -f $dir/model.safetensors && ! -f $dir/training-state.safetensors ]]; then
        echo "$(date -u +%FT%TZ) $name: finished earlier, skipped"; return 0
    fi
    mkdir -p "$dir"
    local resume=()
    [[ -f $dir/training-state.safetensors ]] && resume=(--resume)
    echo "$(date -u +%FT%TZ) $name: start ${resume[*]:-} ($*)"
    echo "$COMMIT" >> "$dir/commit.txt"
    local began=$SECONDS
    if "$MOESCOPE_BIN" train --steps "${RUN_STEPS:-$STEPS}" "$@" --out "$dir" "${resume[@]}" >> "$dir/train.log" 2>&1; then
        echo "$(date -u +%FT%TZ) $name: done in $((SECONDS - began)) s"
    else
        echo "$(date -u +%FT%TZ) $name: FAILED (exit $?) after $((SECONDS - began)) s — see $dir/train.log"
        return 1
    fi
}

routers() {
    # The rows the papers' claims rest on first: Linear and GRU (RMoE), then Hash and Hybrid (the
    # two that beat Linear with one seed before), then the rest.
    local ORDER=(linear gru hash hybrid mlp attention mlp-hadamard)
    for router in "${ORDER[@]}"; do run "$router/seed-1" --router "$router" --seed 1; done
    for seed in 2 3; do
        for router in linear gru; do run "$router/seed-$seed" --router "$router" --seed "$seed"; done
    done
}

ablations() {
    # RMoE ablations, 6 layers, 800 steps, seed 1: before the other routers' seeds 2 and 3, because
    # the RMoE claims rest on them and a session may end before every run is done.
    run ablations/gru-no-recurrence/seed-1 --router gru --no-gru-recurrence --seed 1
    run ablations/gru-state-128/seed-1 --router gru --gru-hidden-size 128 --seed 1
    run ablations/linear-pooled-balance/seed-1 --router linear --balance-loss pooled --balance-coefficient 0.001 --seed 1
    run ablations/gru-pooled-balance/seed-1 --router gru --balance-loss pooled --balance-coefficient 0.001 --seed 1
}

other_seeds() {
    for seed in 2 3; do
        for router in hash hybrid mlp attention mlp-hadamard; do run "$router/seed-$seed" --router "$router" --seed "$seed"; done
    done
}

# Depth and budget (RMoE's depth ablation: the GRU's gain appears with depth): Linear and GRU at
# 12 layers (assets/configs/depth-12.json, otherwise the default shape) and 800 steps, then at 6
# and 12 layers with 3,200 steps, two seeds each. The 6-layer, 800-step cell is the routers group.
# Each cell is a folder of router checkpoints, runs/retrain/scale/<layers>L-<steps>/<router>/seed-N, so
# `moescope compare --routers linear gru --checkpoints runs/retrain/scale/12L-800` pairs GRU with Linear in it.
scale() {
    local seed router
    for seed in 1 2; do
        for router in linear gru; do run "scale/12L-800/$router/seed-$seed" --router "$router" --seed "$seed" --config assets/configs/depth-12.json; done
    done
    for seed in 1 2; do
        for router in linear gru; do RUN_STEPS=3200 run "scale/6L-3200/$router/seed-$seed" --router "$router" --seed "$seed"; done
    done
    for seed in 1 2; do
        for router in linear gru; do
            RUN_STEPS=3200 run "scale/12L-3200/$router/seed-$seed" --router "$router" --seed "$seed" --config assets/configs/depth-12.json
        done
    done
}

# Groups to run, in order (default: all of them): routers ablations other_seeds scale.
GROUPS_TO_RUN=("$@")
[[ ${#GROUPS_TO_RUN[@]} -gt 0 ]] || GROUPS_TO_RUN=(routers ablations other_seeds scale)
for group in "${GROUPS_TO_RUN[@]}"; do
    case $group in
        routers | ablations | other_seeds | scale) "$group" ;;
        *) echo "retrain_all: unknown group '$group' (routers, ablations, other_seeds, scale)" >&2; exit 2 ;;
    esac
done
echo "$(date -u +%FT%TZ) retrain_all: every run of ${GROUPS_TO_RUN[*]} finished"
