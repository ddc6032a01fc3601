"""`divdistill app`: an interactive comparison of a pair's variants in the browser (Gradio), offline on the
shipped pocket pair by default.

    from divdistill.app import AppState, build_app
    state = AppState(lambda: HybridPipeline.from_preset("pocket"))
    build_app(state).launch(server_name="127.0.0.1")

Modules, one job each: `state` (the pair, its best metric, the sample cache keyed by (pair, prompt, seed,
variant)), `compare` (grids and numbers per variant), `trajectory` (x0-hat per step, commitment curves, the
switch point), `control` (an adapter's before/after), `layout` (the Gradio page; the only module importing
gradio). Everything runs through the library's Python API (no argv, no subprocess), so the app and the CLI
cannot drift. Gradio is an optional extra: `pip install "divdistill[app]"`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

INSTALL_HINT = 'The app needs Gradio: pip install "divdistill[app]"'

_LAZY = {
    "AppState": "divdistill.app.state",
    "AppSampling": "divdistill.app.state",
    "build_app": "divdistill.app.layout",
    "launch": "divdistill.app.layout",
    "require_gradio": "divdistill.app.layout",
}
__all__ = sorted([*_LAZY, "INSTALL_HINT"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'divdistill.app' has no attribute {name!r}")
    return getattr(import_module(module), name)
