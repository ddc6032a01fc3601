"""The pocket pair against the issue's targets: diversity, adherence, NFE and time for every sampling mode.

    python benchmarks/pocket.py [--prompts 8] [--seeds 64] [--out pocket-bench.json]
    python benchmarks/pocket.py --base DIR --distilled DIR --evaluator DIR     # another trained set
    python benchmarks/pocket.py --guidance-rescale 0.7                         # CFG rescale (Lin et al.)

Every mode samples the same prompts with the same seeds (seed s gives image s of every mode the same initial
noise). Modes: base (its own 50-step DDIM, CFG 4), distilled (4 LCM steps), hybrid k=1 and k=2 (the base on the
distilled schedule for the first k steps; the paper's 1-1 replacement; "hybrid-1@cfg2" runs that base step at CFG
2 instead of 4), own-k (the base on its own 50-step schedule
down to the distilled schedule's k-th timestep, then the distilled model), and the causal control "reverse"
(the base replaces the *final* step).

Diversity per prompt is the mean pairwise distance among its images, in three spaces: the evaluator's
standardised read-out of the free attributes (size, x, y, background; "attr"), 1 - cosine of its features
("feat"), and pixel RMS ("pixel"). Intervals are 95% over prompts (mean +- 1.96 sd / sqrt(P)). "real" is the
world's own conditional distribution for each prompt.

Failure modes, from pixels and not from the evaluator (`divdistill.pocket.pixels`): the share of empty,
fragmented and smeared images per mode ("failed": any of them), and the evaluator's shape accuracy (the shape
read equals the prompt's). Commitment: layout distance (object position and colour, background grey; weighted by
the difference to the background, so robust to blur) between a run's decoded x0-hat and its final image, for the
base after 25% of its steps and the distilled model after its first.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from divdistill.pocket import POCKET_DEFAULTS, PROMPTS, pocket_pipeline
from divdistill.pocket.evaluator import load_evaluator
from divdistill.pocket.pixels import failure_rates, layout_distance
from divdistill.pocket.world import SHAPES, parse_caption, sample_world

MODES = {
    "base": {"mode": "base"},
    "distilled": {"mode": "distilled"},
    "hybrid-1": {"mode": "hybrid", "base_steps": 1, "base_schedule": "shared"},
    "hybrid-2": {"mode": "hybrid", "base_steps": 2, "base_schedule": "shared"},
    "hybrid-1@cfg2": {"segments": "base:1@cfg2,distilled:3"},  # the base step at a milder CFG (the paper's ablation)
    "own-1": {"segments": "base:1@own,distilled:3"},
    "own-2": {"segments": "base:2@own,distilled:2"},
    "reverse-1": {"mode": "reverse", "base_steps": 1},
}


def mean_pairwise(x: torch.Tensor, kind: str) -> float:
    if kind == "cos":
        f = torch.nn.functional.normalize(x.flatten(1).double(), dim=1)
        d = (1 - f @ f.T).clamp_min(0)
    else:
        d = torch.cdist(x.flatten(1).double()[None], x.flatten(1).double()[None])[0]
        if kind == "rms":
            d = d / math.sqrt(x[0].numel())
    n = x.shape[0]
    return float(d.sum() / (n * (n - 1)))


def summarise(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half}


QUANTITIES = ("attr", "feat", "pixel", "adherence", "shape_accuracy", "failed", "empty", "fragmented", "smeared")


def measure(images: torch.Tensor, prompt: str, evaluator) -> dict[str, float]:
    shape = SHAPES.index(parse_caption(prompt).shape)
    return {
        "attr": mean_pairwise(evaluator.attribute_vector(images), "l2"),
        "feat": mean_pairwise(evaluator.features(images), "cos"),
        "pixel": mean_pairwise(images, "rms"),
        "adherence": float(evaluator.adherence(images, [prompt] * len(images)).mean()),
        "shape_accuracy": float((evaluator.read(images).shape == shape).float().mean()),
        **failure_rates(images),
    }


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    pipe = pocket_pipeline(args.base, args.distilled, guidance_rescale=args.guidance_rescale)
    pipe.set_progress_bar_config(disable=True)
    evaluator = load_evaluator(args.evaluator)
    prompts = list(PROMPTS[: args.prompts])
    seeds = list(range(args.seeds))
    per_mode: dict[str, dict[str, list[float]]] = {}
    costs: dict[str, dict[str, float]] = {}
    commitment: dict[str, float] = {}

    real: dict[str, list[float]] = {k: [] for k in QUANTITIES}
    for index, prompt in enumerate(prompts):
        batch = sample_world(len(seeds), 1000 + index, caption=prompt)
        for key, value in measure(batch.images, prompt, evaluator).items():
            real[key].append(value)
    per_mode["real"] = real

    for name, kwargs in MODES.items():
        values: dict[str, list[float]] = {k: [] for k in QUANTITIES}
        seconds, nfe = 0.0, 0
        for prompt in prompts:
            x0_steps: list[torch.Tensor] = []

            def record(info, store=x0_steps):
                store.append(info.x0.detach().clone())

            generators = [torch.Generator().manual_seed(s) for s in seeds]
            began = time.perf_counter()
            out = pipe(
                prompt,
                num_images_per_prompt=len(seeds),
                generator=generators,
                output_type="pt",
                callback=record if name in ("base", "distilled") else None,
                **kwargs,
            )
            seconds += time.perf_counter() - began
            nfe = out.nfe
            images = out.images.float().clamp(0, 1)
            for key, value in measure(images, prompt, evaluator).items():
                values[key].append(value)
            if x0_steps:
                step = len(x0_steps) // 4 if name == "base" else 0
                with torch.no_grad():
                    decoded = pipe.family.decode(pipe.base, x0_steps[step], "pt").float().clamp(0, 1)
                distance = layout_distance(decoded, images)
                commitment.setdefault(name, 0.0)
                commitment[name] += float(distance.mean()) / len(prompts)
        per_mode[name] = values
        costs[name] = {"nfe": nfe, "seconds_per_image": seconds / (len(prompts) * len(seeds))}
        print(
            f"{name:10s} attr {summarise(values['attr'])['mean']:.3f} adherence "
            f"{summarise(values['adherence'])['mean']:.3f} nfe {nfe}",
            flush=True,
        )

    table = {
        mode: {key: summarise(vals) for key, vals in values.items()} | costs.get(mode, {})
        for mode, values in per_mode.items()
    }
    base = table["base"]["attr"]["mean"]

    def ratio(mode: str) -> float:
        return table[mode]["attr"]["mean"] / base

    def mean(mode: str, key: str) -> float:
        return table[mode][key]["mean"]

    worst_failed = max(mean(mode, "failed") for mode in MODES)
    targets = {
        "distilled <= 0.85 base": (ratio("distilled"), ratio("distilled") <= 0.85),
        "hybrid-1 >= 0.95 base at NFE <= distilled + 1": (
            ratio("hybrid-1"),
            ratio("hybrid-1") >= 0.95 and table["hybrid-1"]["nfe"] <= table["distilled"]["nfe"] + 1,
        ),
        "reverse-1 does not restore (< 0.95 base)": (ratio("reverse-1"), ratio("reverse-1") < 0.95),
        "own-1 >= 0.95 base": (ratio("own-1"), ratio("own-1") >= 0.95),
        "base adherence >= 0.85": (mean("base", "adherence"), mean("base", "adherence") >= 0.85),
        "base shape accuracy >= 0.9": (mean("base", "shape_accuracy"), mean("base", "shape_accuracy") >= 0.9),
        "hybrid-1 adherence >= base - 0.05": (
            mean("hybrid-1", "adherence") - mean("base", "adherence"),
            mean("hybrid-1", "adherence") >= mean("base", "adherence") - 0.05,
        ),
        "failed (empty/fragmented/smeared) <= 2% in every mode": (worst_failed, worst_failed <= 0.02),
        "commitment: distilled step 1 layout distance <= base's at 25%": (
            commitment.get("distilled", float("nan")) - commitment.get("base", float("nan")),
            commitment.get("distilled", math.inf) <= commitment.get("base", -math.inf),
        ),
    }
    result = {
        "prompts": prompts,
        "seeds": len(seeds),
        "defaults": {"base_guidance": POCKET_DEFAULTS.base_guidance_scale, "base_steps": 50},
        "table": table,
        "commitment": commitment,
        "targets": {k: {"value": v, "pass": bool(p)} for k, (v, p) in targets.items()},
    }
    print(
        f"\n{'mode':10s} {'attr div':>18s} {'/base':>6s} {'feat div':>8s} {'pixel':>7s} {'adher.':>7s} "
        f"{'shape':>6s} {'failed':>6s} {'NFE':>4s} {'s/img':>7s}"
    )
    for mode, row in table.items():
        a = row["attr"]
        print(
            f"{mode:10s} {a['mean']:6.3f} [{a['low']:.2f},{a['high']:.2f}] {a['mean'] / base:6.2f} "
            f"{row['feat']['mean']:8.3f} {row['pixel']['mean']:7.3f} {row['adherence']['mean']:7.3f} "
            f"{row['shape_accuracy']['mean']:6.3f} {row['failed']['mean']:6.3f} {row.get('nfe', '-')!s:>4s} "
            f"{row.get('seconds_per_image', float('nan')):7.4f}"
        )
    print(f"\ncommitment (layout distance to final): {json.dumps(commitment)}")
    for name, entry in result["targets"].items():
        print(f"{'PASS' if entry['pass'] else 'FAIL'}  {name}: {entry['value']:.3f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--base")
    parser.add_argument("--distilled")
    parser.add_argument("--evaluator")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--guidance-rescale", type=float, default=None, help="CFG rescale for every CFG run")
    parser.add_argument("--out", default="pocket-bench.json")
    args = parser.parse_args()
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
