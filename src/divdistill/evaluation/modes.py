"""Former name of the variant grammar, kept so scripts importing it go on working: a mode spec is a
`divdistill.variant.Variant` (the one grammar of generate --variant, trace --modes and eval --modes).

    ModeSpec = Variant, parse_mode = parse_variant, parse_modes = parse_variants, KINDS as there.

A Variant has no `generate_args` (the CLI flags a ModeSpec used to emit): run a variant's images with
`divdistill.jobs.run(pipe, jobs, out, settings.with_variant(variant))`, or `evaluate_variants` for several.
"""

from divdistill.variant import KINDS, Variant, parse_variant, parse_variants

ModeSpec = Variant
parse_mode = parse_variant
parse_modes = parse_variants

__all__ = ["KINDS", "ModeSpec", "parse_mode", "parse_modes"]
