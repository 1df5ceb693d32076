"""Summarises the paper checks of `moescope analyze --json` over every seed of a router, for
README's "The papers' own measurements" table.

Usage: python scripts/paper_checks_summary.py assets/results [router ...]   (default: gru linear)

Reads RESULTS/analyze/<router>-seed-N.json (written by scripts/evaluate_retrain.sh: 8 192 held-out
tokens, 1 024 per domain). Each figure is the mean over seeds, with the range over seeds in
brackets when there is more than one.
"""

import glob
import json
import os
import sys


def summary(values, fmt):
    m = sum(values) / len(values)
    text = fmt(m)
    if len(values) > 1:
        text += f" [{fmt(min(values))}–{fmt(max(values))}]"
    return text


def pct(v):
    return f"{100 * v:.0f} %"


def num2(v):
    return f"{v:.2f}"


def main():
    root = sys.argv[1]
    routers = sys.argv[2:] or ["gru", "linear"]
    for router in routers:
        paths = sorted(glob.glob(os.path.join(root, "analyze", f"{router}-seed-*.json")))
        runs = [json.load(open(p))["paper_checks"] for p in paths]
        if not runs:
            print(f"{router}: no analyses")
            continue
        seeds = [os.path.basename(p)[len(router) + 1:-5] for p in paths]
        print(f"## {router} ({len(runs)} checkpoints: {', '.join(seeds)})")
        rows = []

        def add(name, per_run, fmt):
            rows.append((name, summary([per_run(r) for r in runs], fmt)))

        rep = lambda r: r["mixtral_repetition"]["layers"]
        add("Mixtral first choice, L0", lambda r: rep(r)[0]["first_choice"], pct)
        add("Mixtral first choice, last layer", lambda r: rep(r)[-1]["first_choice"], pct)
        add("Mixtral first choice, min over layers", lambda r: min(l["first_choice"] for l in rep(r)), pct)
        add("Mixtral first choice, max over layers", lambda r: max(l["first_choice"] for l in rep(r)), pct)
        add("Mixtral any overlap, min over layers", lambda r: min(l["any_overlap"] for l in rep(r)), pct)
        add("Mixtral any overlap, max over layers", lambda r: max(l["any_overlap"] for l in rep(r)), pct)
        add("Mixtral any overlap, L0", lambda r: rep(r)[0]["any_overlap"], pct)
        add("Mixtral any overlap, last layer", lambda r: rep(r)[-1]["any_overlap"], pct)
        co = lambda r: r["olmoe_coactivation"]["layers"]
        add("OLMoE strongest partner, L0", lambda r: co(r)[0]["mean_strongest_all_pairs"], num2)
        add("OLMoE strongest partner, min L1–", lambda r: min(l["mean_strongest_all_pairs"] for l in co(r)[1:]), num2)
        add("OLMoE strongest partner, max L1–", lambda r: max(l["mean_strongest_all_pairs"] for l in co(r)[1:]), num2)
        add("OLMoE adjacent == all pairs (max |diff|)",
            lambda r: max(abs(l["mean_strongest_all_pairs"] - l["mean_strongest_adjacent_pairs"]) for l in co(r)), lambda v: f"{v:.4f}")
        voc = lambda r: r["olmoe_vocabulary_specialisation"]["layers"]
        add("OLMoE vocabulary, ids ≥ 10×, L0", lambda r: voc(r)[0]["top1_frequent"], num2)
        add("OLMoE vocabulary, ids ≥ 10×, last layer", lambda r: voc(r)[-1]["top1_frequent"], num2)
        add("OLMoE vocabulary, every id, L0", lambda r: voc(r)[0]["top1"], num2)
        add("OLMoE vocabulary, every id, last layer", lambda r: voc(r)[-1]["top1"], num2)
        dom = lambda r: [l["specialisation"] for d in r["olmoe_domain_specialisation"]["domains"] for l in d["layers"]]
        add("OLMoE domain specialisation, min over domains × layers", lambda r: min(dom(r)), pct)
        add("OLMoE domain specialisation, max over domains × layers", lambda r: max(dom(r)), pct)
        for name in ("pci-ids", "markdown", "english", "python"):
            add(f"OLMoE domain specialisation, {name}, last layer",
                lambda r, name=name: next(d for d in r["olmoe_domain_specialisation"]["domains"] if d["domain"] == name)["layers"][-1]["specialisation"], pct)
        mi = lambda r: r["rmoe_mutual_information"]
        add("RMoE MI per-token, all pairs", lambda r: mi(r)["per_token_mean_all_pairs"], num2)
        add("RMoE MI per-token, adjacent", lambda r: mi(r)["per_token_mean_adjacent"], num2)
        add("moescope MI top-1, all pairs", lambda r: mi(r)["top1_mean_all_pairs"], num2)
        add("moescope MI top-1, adjacent", lambda r: mi(r)["top1_mean_adjacent"], num2)
        bal = lambda r: r["rmoe_balance"]["layers"]
        add("RMoE inner, min over layers", lambda r: min(l["inner"] for l in bal(r)), num2)
        add("RMoE inner, max over layers", lambda r: max(l["inner"] for l in bal(r)), num2)
        add("RMoE inner, mean over layers", lambda r: sum(l["inner"] for l in bal(r)) / len(bal(r)), num2)
        add("RMoE outer, min over layers", lambda r: min(l["outer"] for l in bal(r)), num2)
        add("RMoE outer, max over layers", lambda r: max(l["outer"] for l in bal(r)), num2)
        add("RMoE outer, mean over layers", lambda r: sum(l["outer"] for l in bal(r)) / len(bal(r)), num2)
        for name, value in rows:
            print(f"- {name}: {value}")
        print()


if __name__ == "__main__":
    main()
