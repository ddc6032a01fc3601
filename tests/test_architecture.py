"""The layering of docs/architecture.md, enforced: no import cycles, lower layers never import higher ones.

Function-local imports count (they are how cycles used to hide). Lazy imports of optional third-party backends
are not divdistill modules and do not appear in the graph.
"""

from __future__ import annotations

import ast

from import_graph import ROOT, SRC, build

#: Layers, lowest first (docs/architecture.md). A module may import its own layer and the ones below.
LAYERS: tuple[tuple[str, ...], ...] = (
    # engine: pure sampling maths, the variant grammar, and the small file/IO helpers everything shares
    (
        "schedule", "variant", "sampling", "conventions", "prediction", "conditioning", "defaults",
        "images", "devices", "outlock", "journal", "fingerprint", "quiet", "htmlpage", "outputs", "adapter_spec",
        "offload", "recording", "diversity", "videos", "tensorfiles",
    ),
    ("families", "denoiser"),  # the denoiser wraps one family's network as x0-hat
    ("pipeline",),
    ("loading", "presets"),
    ("jobs",),
    ("trajectory", "control", "evaluation", "metrics"),
    ("demo", "app", "pocket", "testing"),
    ("cli",),
)  # fmt: skip
#: Modules that are commands (they may build and parse argv); everything else is library.
COMMAND_MODULES = ("divdistill.cli",)

MAX_LINES = 420
GRAPH = build()


def layer_of(module: str) -> int:
    top = module.split(".")[1]
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py; add it to LAYERS")


def test_every_module_has_a_layer() -> None:
    for module in GRAPH.modules:
        if module != ROOT:
            layer_of(module)


def test_there_are_no_import_cycles() -> None:
    assert GRAPH.cycles() == []


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in sorted(GRAPH.edges.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_the_library_never_imports_test_support_or_the_pocket_from_below() -> None:
    """`divdistill.testing` is for tests; the pocket plugs itself in through entry points."""
    offenders = [
        f"{module} -> {target}"
        for module, targets in sorted(GRAPH.edges.items())
        for target in sorted(targets)
        if (target.startswith("divdistill.testing") and not module.startswith("divdistill.testing"))
        or (target.startswith("divdistill.pocket") and layer_of(module) < layer_of("divdistill.pocket"))
    ]
    assert offenders == []


def test_the_package_root_imports_nothing_eagerly() -> None:
    tree = ast.parse((SRC / ROOT / "__init__.py").read_text())
    allowed = ("__future__", "importlib", "typing")
    eager = [
        ast.unparse(node)
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom) and (node.module or "") not in allowed
    ]
    assert eager == []


def test_only_command_modules_build_or_parse_argv() -> None:
    """The library is called with values, never with argv: `ArgumentParser` and `parse_args` live in commands."""
    offenders = []
    for module, path in GRAPH.modules.items():
        if module.startswith(COMMAND_MODULES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in ("ArgumentParser", "parse_args", "parse_known_args"):
                offenders.append(f"{module}:{node.lineno} uses {name}")
    assert offenders == []


def test_modules_stay_small() -> None:
    """One job per module: a file past ~400 lines has grown a second one (docs/architecture.md)."""
    sizes = {module: path.read_text().count("\n") for module, path in GRAPH.modules.items()}
    assert {module: lines for module, lines in sizes.items() if lines > MAX_LINES} == {}
