"""The depth-and-budget table (RMoE's depth ablation): GRU against Linear in each cell.

Usage: python scripts/scale_table.py assets/results > assets/results/scale.md

Reads RESULTS/scale/<layers>L-<steps>.json, each `moescope compare --routers linear gru --json` over
one cell's checkpoints (scripts/evaluate_retrain.sh writes them), and RESULTS/compare.json as the
6-layer, 800-step cell (the main comparison), and prints one row per cell:
Linear's and GRU's held-out perplexity with their 95 % intervals, GRU's paired difference to Linear
(the same windows, seeds resampled), and the seeds each side has. Cells are ordered by layers, then
steps.
"""

import glob
import json
import os
import re
import sys

root = sys.argv[1]


def interval(stat, percent=False):
    scale = 100 if percent else 1
    fmt = "{:+.1f} %" if percent else "{:.2f}"
    text = f"{fmt.format(stat['estimate'] * scale)} [{fmt.format(stat['lower'] * scale)}, {fmt.format(stat['upper'] * scale)}]"
    if percent and stat["lower"] <= 0 <= stat["upper"]:
        text += " n.s."
    return text


cells = []
paths = [(path, re.fullmatch(r"(\d+)L-(\d+)", os.path.basename(path)[: -len(".json")])) for path in glob.glob(os.path.join(root, "scale", "*.json"))]
paths = [(path, int(match.group(1)), int(match.group(2))) for path, match in paths if match]
if os.path.exists(os.path.join(root, "compare.json")) and not any((layers, steps) == (6, 800) for _, layers, steps in paths):
    paths.append((os.path.join(root, "compare.json"), 6, 800))
for path, layers, steps in paths:
    report = json.load(open(path))
    rows = {}
    for row in report["rows"]:  # the routers' own rows come first; ablation rows share a router name
        rows.setdefault(row["router"], row)
    if "linear" not in rows or "gru" not in rows:
        continue
    cells.append((layers, steps, report, rows))
if not cells:
    sys.exit(f"{root}/scale: no <layers>L-<steps>.json with both a linear and a gru row — run scripts/evaluate_retrain.sh")
cells.sort(key=lambda cell: (cell[0], cell[1]))
print(
    f"Held-out split, whole ({cells[0][2]['tokens']} predictions); 95 % paired bootstrap intervals "
    f"({cells[0][2]['resamples']} resamples of windows within domains, and of seeds)."
)
print()
print("| Layers | Steps | Seeds (Linear / GRU) | Linear PPL [95 % CI] | GRU PPL [95 % CI] | GRU vs Linear [95 % CI] | Cross-layer MI, Linear / GRU |")
print("|---:|---:|---|---|---|---|---|")
for layers, steps, _, rows in cells:
    linear, gru = rows["linear"], rows["gru"]
    print(
        f"| {layers} | {steps} | {len(linear['seeds'])} / {len(gru['seeds'])} | {interval(linear['perplexity'])} | "
        f"{interval(gru['perplexity'])} | {interval(gru['relative_difference_to_baseline'], percent=True)} | "
        f"{linear['cross_layer_mi']['estimate']:.3f} / {gru['cross_layer_mi']['estimate']:.3f} |"
    )
