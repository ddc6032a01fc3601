"""The pocket pair against the issue's targets: diversity, adherence, NFE and time for every sampling mode.

    python benchmarks/pocket.py [--prompts 8] [--seeds 64] [--out pocket-bench.json]
    python benchmarks/pocket.py --base DIR --distilled DIR --evaluator DIR     # another trained set
    python benchmarks/pocket.py --guidance-rescale 0.7                         # CFG rescale (Lin et al.)

Every mode samples the same prompts with the same seeds (seed s gives image s of every mode the same initial
noise). Modes: base (its own 50-step DDIM, CFG 4), distilled (4 LCM steps), hybrid k=1 and k=2 (the base on the
distilled schedule for the first k steps; the paper's 1-1 replacement; "base:1@cfg2+distilled:3" runs that base step
at CFG 2 instead of 4), "base:k@own+distilled:(4-k)" (the base on its own 50-step schedule down to the distilled
schedule's k-th timestep, then the distilled model), and the causal control "reverse:1" (the base replaces the
*final* step). Mode names are variants of the shared grammar (`divdistill.variant`).

Diversity per prompt is the mean pairwise distance among its images, in the three spaces of
`divdistill.pocket.spaces` (the demo's): L2 of the evaluator's standardised read-out of the free attributes (size,
x, y, background; "attr"), 1 - cosine of its features ("feat"), and pixel RMS ("pixel"). Intervals are 95% over
prompts (mean +- 1.96 sd / sqrt(P)). "real" is the world's own conditional distribution for each prompt.

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

from divdistill.metrics.diversity import mean_pairwise_distance
from divdistill.pocket import POCKET_DEFAULTS, PROMPTS, pocket_pipeline
from divdistill.pocket.evaluator import load_evaluator
from divdistill.pocket.pixels import failure_rates, layout_distance
from divdistill.pocket.spaces import SPACES
from divdistill.pocket.world import SHAPES, parse_caption, sample_world
from divdistill.variant import parse_variants

#: Variants of the shared grammar (`divdistill.variant`); their text keys the table. The segment lists are the
#: paper's ablations written out (the base step at a milder CFG; the base on its own grid for k steps).
MODES = {
    variant.text: variant
    for variant in parse_variants(
        "base,distilled,hybrid:1,hybrid:2,base:1@cfg2+distilled:3,base:1@own+distilled:3,base:2@own+distilled:2,"
        "reverse:1"
    )
}
HYBRID_1, OWN_1, REVERSE_1 = "hybrid:1", "base:1@own+distilled:3", "reverse:1"


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
        **{
            name: mean_pairwise_distance(space.vector(images, evaluator), space.distance)
            for name, space in SPACES.items()
        },
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

    for name, variant in MODES.items():
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
                **variant.pipeline_kwargs(),
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
        f"{HYBRID_1} >= 0.95 base at NFE <= distilled + 1": (
            ratio(HYBRID_1),
            ratio(HYBRID_1) >= 0.95 and table[HYBRID_1]["nfe"] <= table["distilled"]["nfe"] + 1,
        ),
        f"{REVERSE_1} does not restore (< 0.95 base)": (ratio(REVERSE_1), ratio(REVERSE_1) < 0.95),
        f"{OWN_1} >= 0.95 base": (ratio(OWN_1), ratio(OWN_1) >= 0.95),
        "base adherence >= 0.85": (mean("base", "adherence"), mean("base", "adherence") >= 0.85),
        "base shape accuracy >= 0.9": (mean("base", "shape_accuracy"), mean("base", "shape_accuracy") >= 0.9),
        f"{HYBRID_1} adherence >= base - 0.05": (
            mean(HYBRID_1, "adherence") - mean("base", "adherence"),
            mean(HYBRID_1, "adherence") >= mean("base", "adherence") - 0.05,
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
