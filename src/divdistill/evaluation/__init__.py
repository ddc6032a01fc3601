"""Evaluation harness: diversity, quality and speed of a pair's sampling modes, or of any image folders.

    from divdistill.evaluation import Evaluator, scan_image_set, write_reports

    sets = [scan_image_set("out/distilled"), scan_image_set("out/hybrid-1")]
    result = Evaluator("diversity,vendi").evaluate(sets)          # pixel fallback when nothing else is installed
    write_reports(result, "report/")                             # metrics.csv/.json/.md, plots/, index.html

`evaluate_variants(pipe, jobs, variants, out, settings, evaluator)` (divdistill.evaluation.variants) adds the
generation of each variant's missing images (`divdistill.jobs.run`); it is what `divdistill eval` calls.
"""

from divdistill.evaluation.imagesets import ImageGroup, ImageSet, scan_image_set
from divdistill.evaluation.modes import ModeSpec, parse_mode, parse_modes
from divdistill.evaluation.report import write_reports
from divdistill.evaluation.runner import (
    DEFAULT_METRICS,
    METRICS,
    EvalResult,
    Evaluator,
    Metric,
    MetricSpec,
    evaluate,
    parse_metric,
    parse_metrics,
)
from divdistill.evaluation.variants import (
    VariantRun,
    VariantsEvaluation,
    evaluate_prompts,
    evaluate_variants,
    generate_variants,
)

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "EvalResult",
    "Evaluator",
    "ImageGroup",
    "ImageSet",
    "Metric",
    "MetricSpec",
    "ModeSpec",
    "VariantRun",
    "VariantsEvaluation",
    "evaluate",
    "evaluate_prompts",
    "evaluate_variants",
    "generate_variants",
    "parse_metric",
    "parse_metrics",
    "parse_mode",
    "parse_modes",
    "scan_image_set",
    "write_reports",
]
