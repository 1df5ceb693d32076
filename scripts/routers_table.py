"""Writes README's "What the seven routers do here" table from `moescope analyze --json` results.

Usage: python scripts/routers_table.py assets/results > assets/results/routers.md

Reads RESULTS/analyze/<router>-seed-N.json (scripts/evaluate_retrain.sh: 8 192 held-out tokens,
1 024 per domain, per checkpoint). Each cell is the mean over the router's seeds; for entropy and
MI the range over seeds follows in brackets when there is more than one.
"""

import glob
import json
import os
import sys

ORDER = ["linear", "mlp", "attention", "hybrid", "hash", "mlp-hadamard", "gru"]
NAMES = {"linear": "Linear", "mlp": "MLP", "attention": "Attention", "hybrid": "Hybrid", "hash": "Hash",
         "mlp-hadamard": "MLP-Hadamard", "gru": "GRU (RMoE)"}


def mean(xs):
    return sum(xs) / len(xs)


def spread(values, fmt):
    text = fmt(mean(values))
    return text + (f" [{fmt(min(values))}–{fmt(max(values))}]" if len(values) > 1 else "")


def main():
    root = sys.argv[1]
    runs = {}
    for path in sorted(glob.glob(os.path.join(root, "analyze", "*-seed-*.json"))):
        router = os.path.basename(path)[:-5].rsplit("-seed-", 1)[0]
        runs.setdefault(router, []).append(json.load(open(path)))
    print("| Router | Seeds | Entropy (nats) | Cross-layer MI, all pairs | MI, adjacent layers "
          "| top-1 gate = largest-norm expert, L0 / L1–L5 | ρ(gate, norm) at L0 | Expert similarity (RMoE's form) L0 → last |")
    print("|---|---:|---|---|---|---|---:|---|")
    for router in ORDER + sorted(set(runs) - set(ORDER)):
        if router not in runs:
            continue
        analyses = runs[router]
        entropy = [mean([l["entropy"]["mean"] for l in a["layers"]]) for a in analyses]
        mi_all, mi_adjacent = [], []
        for a in analyses:
            m = a["cross_layer_mutual_information"]
            n = len(m)
            mi_all.append(mean([m[i][j] for i in range(n) for j in range(n) if i != j]))
            mi_adjacent.append(mean([m[i][i + 1] for i in range(n - 1)]))
        layers = len(analyses[0]["layers"])
        agree0 = mean([a["layers"][0]["top1_norm_agreement"] for a in analyses])
        deeper = [mean([a["layers"][i]["top1_norm_agreement"] for a in analyses]) for i in range(1, layers)]
        rho0 = mean([a["layers"][0]["gate_norm_rank_correlation"] for a in analyses])
        similarity = [mean([a["layers"][i]["mean_expert_similarity"] for a in analyses]) for i in range(layers)]
        print(f"| {NAMES.get(router, router)} | {len(analyses)} | {spread(entropy, lambda v: f'{v:.2f}')} "
              f"| {spread(mi_all, lambda v: f'{v:.3f}')} | {spread(mi_adjacent, lambda v: f'{v:.3f}')} "
              f"| {100 * agree0:.0f} % / {100 * min(deeper):.0f}–{100 * max(deeper):.0f} % | {rho0:.2f} "
              f"| {' '.join(f'{s:.2f}' for s in similarity)} |")


if __name__ == "__main__":
    main()
