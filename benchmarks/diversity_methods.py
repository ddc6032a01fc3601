"""Diversity methods side by side on the pocket pair: every method alone and with hybrid:1, and the adaptive switch.

    python benchmarks/diversity_methods.py [--prompts 8] [--seeds 64] [--threads 1] [--out bench-diversity]

Every variant samples the same prompts with the same seeds (benchmarks/pocket.py's protocol and measures:
attribute diversity with 95% intervals over prompts, adherence, failure rate, NFE and seconds per image). It
writes results.json, table.md (the docs/diversity.md table), the adaptive switch's chosen-step distribution, and
the Pareto plots of diversity against adherence and against seconds per image (`divdistill.evaluation.pareto`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from divdistill.diversity import derive_threshold
from divdistill.evaluation.pareto import pareto_front, write_pareto_plots
from divdistill.pocket import PROMPTS, pocket_pipeline
from divdistill.pocket.evaluator import load_evaluator
from divdistill.variant import parse_variants
from pocket import QUANTITIES, measure, summarise

VARIANTS = (
    "base,distilled,hybrid:1,"
    "distilled+cads@0.1,distilled+cads,hybrid:1+cads@0.1,hybrid:1+cads,"
    "base+interval,base+interval@hi2,hybrid:1+interval@hi3,"
    "distilled+particle@10,distilled+particle@50,hybrid:1+particle@10,hybrid:1+particle@50,"
    "hybrid:1@own@steps40,hybrid:2@own@steps40,hybrid:3@own@steps40,"
    "adaptive,adaptive@steps40,adaptive@thr0.02@steps40,adaptive@thr0.01@steps40,adaptive@thr0.005@steps40"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--out", default="bench-diversity")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = pocket_pipeline()
    pipe.set_progress_bar_config(disable=True)
    evaluator = load_evaluator()
    prompts, seeds = list(PROMPTS[: args.prompts]), list(range(args.seeds))
    began = time.perf_counter()
    derivation = derive_threshold(pipe, prompts, seeds=8)
    print(f"derived threshold {derivation.threshold:.3f} at base step {derivation.step} "
          f"(t={derivation.timestep:g}; distilled first-step distance {derivation.distilled_first:.3f}) "
          f"in {time.perf_counter() - began:.0f} s", flush=True)  # fmt: skip
    table: dict[str, dict] = {}
    for variant in parse_variants(args.variants):
        values: dict[str, list[float]] = {k: [] for k in QUANTITIES}
        seconds, nfe, switches = 0.0, [], Counter()
        for prompt in prompts:
            generators = [torch.Generator().manual_seed(s) for s in seeds]
            started = time.perf_counter()
            result = pipe(prompt, num_images_per_prompt=len(seeds), generator=generators, output_type="pt",
                          **variant.pipeline_kwargs())  # fmt: skip
            seconds += time.perf_counter() - started
            nfe.append(result.nfe)
            switches.update(result.settings.get("adaptive", {}).get("switch_steps", []))
            for key, value in measure(result.images.float().clamp(0, 1), prompt, evaluator).items():
                values[key].append(value)
        row = {key: summarise(vals) for key, vals in values.items()}
        row |= {"nfe": sum(nfe) / len(nfe), "seconds_per_image": seconds / (len(prompts) * len(seeds))}
        if switches:
            row["switch_steps"] = {str(k): switches[k] for k in sorted(switches)}
        table[variant.text] = row
        print(f"{variant.text:32s} attr {row['attr']['mean']:.3f} adherence {row['adherence']['mean']:.3f} "
              f"nfe {row['nfe']:.1f} s/img {row['seconds_per_image']:.4f} {row.get('switch_steps', '')}",
              flush=True)  # fmt: skip
    base = table["base"]["attr"]["mean"] if "base" in table else None
    rows = [{"name": name, "diversity": r["attr"]["mean"], "quality": r["adherence"]["mean"],
             "seconds_per_image": r["seconds_per_image"]} for name, r in table.items()]  # fmt: skip
    fronts = {"quality": pareto_front(rows, "quality", "diversity"),
              "speed": pareto_front(rows, "seconds_per_image", "diversity", x_lower=True)}  # fmt: skip
    write_pareto_plots(rows, out)
    lines = [
        "| variant | attr. diversity [95% CI] | / base | adherence | failed | NFE | s/image | adaptive k: images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in table.items():
        a = r["attr"]
        ratio = f"{a['mean'] / base:.2f}" if base else "-"
        ks = ", ".join(f"{k}: {n}" for k, n in r.get("switch_steps", {}).items()) or "-"
        mark = "**" if name in fronts["quality"] or name in fronts["speed"] else ""
        lines.append(
            f"| {mark}`{name}`{mark} | {a['mean']:.3f} [{a['low']:.2f}, {a['high']:.2f}] | {ratio} | "
            f"{r['adherence']['mean']:.3f} | {r['failed']['mean']:.3f} | {r['nfe']:.1f} | "
            f"{r['seconds_per_image']:.4f} | {ks} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    record = {"prompts": prompts, "seeds": len(seeds), "threads": args.threads, "table": table, "fronts": fronts,
              "threshold": derivation.__dict__, "seconds": time.perf_counter() - began}  # fmt: skip
    (out / "results.json").write_text(json.dumps(record, indent=1, default=str))
    print("\n".join(lines))
    print(f"Pareto fronts: {fronts}; {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
