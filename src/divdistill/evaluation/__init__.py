"""Evaluation harness: diversity, quality and speed of a pair's sampling modes, or of any image folders.

    from divdistill.evaluation import Evaluator, scan_image_set, write_reports

    sets = [scan_image_set("out/distilled"), scan_image_set("out/hybrid-1")]
    result = Evaluator("diversity,vendi").evaluate(sets)          # pixel fallback when nothing else is installed
    write_reports(result, "report/")                             # metrics.csv/.json/.md, plots/, index.html

`divdistill eval` (divdistill.cli.evaluate) adds generation of the missing images per mode.
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
    "evaluate",
    "parse_metric",
    "parse_metrics",
    "parse_mode",
    "parse_modes",
    "scan_image_set",
    "write_reports",
]
