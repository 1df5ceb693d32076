"""Loss curves of a torch_moe run and a `moescope train` run side by side, and how far apart
their final weights are. Used by smoke.sh:

    python -m torch_moe.compare_runs TORCH_DIR MOESCOPE_DIR MOESCOPE_PROGRESS_LOG [SAME_RUN_DIR]

moescope prints the mean cross-entropy of the last 20 steps (3 decimals) on its progress line;
the same running mean is computed from the PyTorch log, so the columns compare like for like.
"""

import json
import re
import sys

from safetensors.torch import load_file


def moescope_curve(path: str) -> dict[int, float]:
    text = open(path, encoding="utf-8", errors="replace").read().replace("\r", "\n")
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"step (\d+)/\d+ .*?loss ([0-9.]+)", text)}


def torch_curve(directory: str) -> list[dict]:
    return [json.loads(line) for line in open(f"{directory}/log.jsonl")]


def weight_gap(a_dir: str, b_dir: str) -> tuple[float, float]:
    a, b = load_file(f"{a_dir}/model.safetensors"), load_file(f"{b_dir}/model.safetensors")
    assert a.keys() == b.keys(), f"{a_dir} and {b_dir} hold different tensors"
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    scale = max(a[k].float().abs().max().item() for k in a)
    return worst, scale


def main(torch_dir: str, moescope_dir: str, progress_log: str, same_run_dir: str | None = None):
    log, theirs = torch_curve(torch_dir), moescope_curve(progress_log)
    print("| step | PyTorch CE | PyTorch mean of last 20 | moescope mean of last 20 | difference |")
    print("|---:|---:|---:|---:|---:|")
    recent, gaps = [], []
    for entry in log:
        recent = (recent + [entry["cross_entropy"]])[-20:]
        mean = sum(recent) / len(recent)
        step = entry["step"]
        other = theirs.get(step)
        gap = "" if other is None else f"{round(mean, 3) - other:+.3f}".replace("-0.000", "+0.000")
        if other is not None:
            gaps.append(abs(round(mean, 3) - other))
        print(f"| {step} | {entry['cross_entropy']:.4f} | {mean:.3f} | {'' if other is None else f'{other:.3f}'} | {gap} |")
    print(f"\nlargest difference of the running means: {max(gaps):.3f} over {len(gaps)} steps printed by moescope")
    worst, scale = weight_gap(torch_dir, moescope_dir)
    a, b = load_file(f"{torch_dir}/model.safetensors"), load_file(f"{moescope_dir}/model.safetensors")
    mean = sum((a[k].float() - b[k].float()).abs().sum().item() for k in a) / sum(a[k].numel() for k in a)
    print(f"final weights, PyTorch vs moescope: largest difference {worst:.2e}, mean {mean:.2e} (largest weight {scale:.2f})")
    if same_run_dir:
        worst, _ = weight_gap(torch_dir, same_run_dir)
        print(f"final weights, interrupted + resumed vs uninterrupted PyTorch run: largest difference {worst:.2e}"
              + (" (identical)" if worst == 0 else ""))


if __name__ == "__main__":
    main(*sys.argv[1:])
