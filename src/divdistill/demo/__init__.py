"""`divdistill demo`: the paper's story on the shipped pocket pair, offline on a CPU in a few minutes.

    from divdistill import demo
    result = demo.run("demo-out", demo.DemoConfig.full())   # or DemoConfig.quick() (seconds; tests) -> DemoResult

Writes into OUT: `index.html` (every figure and table), `results.json`, `modes.csv`, `slider.csv`, `curves.csv`,
`curves.json` and PNGs:

- sample grids of every mode for several prompts (seed s is the same initial noise in every mode);
- x0-hat trajectories of one seed across base, distilled and the hybrids (side by side), and the commitment and
  diversity curves (`divdistill.trajectory`);
- per mode: diversity (evaluator attributes, evaluator features, pixels; bootstrap 95% intervals over seeds,
  averaged over prompts as in `divdistill.metrics.diversity`), adherence, NFE and seconds per image;
- control transfer: the shipped size slider (`pocket/weights/sliders/size.safetensors`, trained on the base)
  applied at several scales to base, distilled and hybrid, scored with the evaluator's size read-out;
- the paper's targets, each with this run's number and whether it holds.

Modes are variants of the shared grammar (`divdistill.variant`; their text keys every table, CSV and JSON): base
(its own 50-step DDIM, CFG 4), distilled (4 LCM steps), hybrid:1 / hybrid:2 on the distilled schedule (the
paper's 1-1 replacement, the pocket default), hybrid:1@own (the base on its own 50-step grid down to t=749, then
the distilled model), and reverse:1 (the base replaces the final step: the causal control). Diversity spaces are
`divdistill.pocket.spaces` (as `benchmarks/pocket.py`): "attr" is the mean pairwise L2 distance of the
evaluator's standardised size/x/y/background read-out, "feat" 1 - cosine of its 128-d features, "pixel" RMS
pixel distance.
Failure modes per mode come from the pixels, not the evaluator (`divdistill.pocket.pixels`: empty, fragmented or
smeared images), with the evaluator's shape accuracy; commitment compares layouts (object position and colour,
background), which a blurry x0-hat shares with the sharp image it becomes.

Modules: `config` (modes, settings, the result), `measure` (numbers and targets), `figures`, `report` (text,
HTML, CSV, JSON), `main` (`run`: the whole demo).
"""

from divdistill.demo.config import MODES, SLIDER_NAME, DemoConfig, DemoMode, DemoResult, slider_path
from divdistill.demo.main import run
from divdistill.demo.report import headline

run_demo = run  # the former name (cli/demo.py and scripts call it)

__all__ = ["MODES", "SLIDER_NAME", "DemoConfig", "DemoMode", "DemoResult", "headline", "run", "run_demo",
           "slider_path"]  # fmt: skip
