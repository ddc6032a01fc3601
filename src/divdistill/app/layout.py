"""The Gradio page of `divdistill app`: Compare, Trajectory and Control tabs over one `AppState`.

The only module that imports gradio. Handlers call `compare`, `trajectory` and `control` and turn what they
return (or the library's error message) into components; an error is shown in the tab's status line and the
app keeps serving. Nothing is fetched from the internet: analytics are off, the theme uses system fonts, no
share link is made.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from divdistill.app import INSTALL_HINT
from divdistill.app import compare as comparing
from divdistill.app.compare import NAMED_VARIANTS, TABLE_HEADERS, VariantResult, seed_list, selected_variants
from divdistill.app.control import ON_CHOICES, control_view, shipped_adapter
from divdistill.app.state import AppSampling, AppState, message
from divdistill.app.trajectory import TrajectoryView, trajectory_view
from divdistill.variant import parse_variant

DEFAULT_PROMPT = "a red circle"
DEFAULT_VARIANTS = ("distilled", "hybrid:1")
MAX_GRIDS = 8  # variants shown at once (one image slot each)


def require_gradio() -> Any:
    """The gradio module, or ImportError with the install line."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return gradio


def _error(error: BaseException) -> str:
    return f"**Error:** {message(error)}"


def _sampling(steps: Any, base_steps: Any, base_cfg: Any) -> AppSampling:
    """The shared sampling boxes as settings (empty: the pair's default); ValueError for values out of range."""

    def whole(value: Any, name: str) -> int | None:
        if value in (None, ""):
            return None
        if float(value) != int(float(value)) or int(float(value)) < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value}; leave it empty for the "
                             "pair's default.")  # fmt: skip
        return int(float(value))

    cfg = None if base_cfg in (None, "") else float(base_cfg)
    if cfg is not None and not 0 <= cfg <= 100:
        raise ValueError(f"Base guidance must be between 0 and 100, got {cfg:g}.")
    return AppSampling(whole(steps, "Distilled steps"), whole(base_steps, "Base steps"), cfg)


def compare_handler(state: AppState, prompt: str, count: Any, first: Any, named: list[str], free: str, steps: Any,
                    base_steps: Any, base_cfg: Any, progress: Any = None) -> Iterator[tuple]:  # fmt: skip
    """Yields (status, gallery, table) after each variant, so grids appear as they are done."""
    try:
        sampling = _sampling(steps, base_steps, base_cfg)
        seeds = seed_list(int(first or 0), int(count or 0))
        variants = selected_variants(named or [], free or "")
        if len(variants) > MAX_GRIDS:
            raise ValueError(f"{len(variants)} variants chosen; the page shows at most {MAX_GRIDS} at once.")
        state.pipe  # noqa: B018 (a loading error is this click's error)
    except Exception as error:
        yield _error(error), *_grids([])
        return
    done: list[VariantResult] = []
    report = (lambda f, text: progress(f, desc=text)) if progress is not None else None
    try:
        for result in comparing.compare(state, prompt, seeds, variants, sampling, report):
            done.append(result)
            yield _status(done, len(variants)), *_grids(done)
    except Exception as error:
        yield _error(error), *_grids(done)


def _grids(done: list[VariantResult]) -> tuple:
    """The table and one image update per grid slot (shown with its caption, or hidden)."""
    import gradio as gr

    slots = [gr.update(value=r.grid(), label=r.caption(), visible=True) for r in done]
    slots += [gr.update(value=None, visible=False)] * (MAX_GRIDS - len(done))
    return (comparing.table_rows(done), *slots)


def _status(done: list[VariantResult], total: int) -> str:
    first = done[0]
    label = first.metric_label + (" (FALLBACK: pixels, not perceptual)" if first.fallback else "")
    made = sum(r.made for r in done)
    return (f"{len(done)} of {total} variants, {len(first.seeds)} seeds each ({made} images sampled now, the rest "
            f"cached). Metric: {label}.")  # fmt: skip


def trajectory_handler(state: AppState, prompt: str, seed: Any, named: list[str], free: str, steps: Any,
                       base_steps: Any, base_cfg: Any, step: Any) -> tuple:  # fmt: skip
    """(status, view, frame, plot, slider update)."""
    import gradio as gr

    try:
        sampling = _sampling(steps, base_steps, base_cfg)
        seed = seed_list(int(seed or 0), 1)[0]
        view = trajectory_view(state, prompt, seed, selected_variants(named or [], free or ""), sampling)
    except Exception as error:
        return _error(error), None, None, None, gr.update()
    step = min(int(step or view.max_steps), view.max_steps)
    slider = gr.update(maximum=view.max_steps, value=step)
    return view.switch_text(), view, view.frame(step), view.plot(), slider


def frame_handler(view: TrajectoryView | None, step: Any) -> Any:
    import gradio as gr

    return gr.update() if view is None else view.frame(int(step))


def control_handler(state: AppState, prompt: str, count: Any, first: Any, variant: str, upload: Any, path: str,
                    scale: Any, on: str, start: Any, steps: Any, base_steps: Any, base_cfg: Any) -> tuple:  # fmt: skip
    """(status, before/after grid)."""
    try:
        sampling = _sampling(steps, base_steps, base_cfg)
        seeds = seed_list(int(first or 0), int(count or 0))
        source = upload or (path or "").strip() or None
        view = control_view(state, prompt, seeds, parse_variant(variant or "hybrid"), sampling, source,
                            float(scale), on, start)  # fmt: skip
    except Exception as error:
        return _error(error), None
    return f"{len(seeds)} seeds, scale {view.scale:g} on {on} ({view.made} images sampled now).", view.grid()


def build_app(state: AppState, load_error: str | None = None) -> Any:
    """The page (a `gradio.Blocks`) over `state`; `load_error` (the pair failed to load) is shown on top."""
    gr = require_gradio()
    PROGRESS = gr.Progress()  # gradio finds it by the default value of the handler's argument
    defaults = state._pipe.defaults if state._pipe is not None else None
    with gr.Blocks(title="divdistill app", analytics_enabled=False) as page:
        views = gr.State(None)
        gr.Markdown(f"## divdistill: {state.name}\nBase model for the first steps, distilled after. Variants use the "
                    "grammar of `divdistill generate --variant` (e.g. `hybrid:2@cfg2`, `base@steps25`, "
                    "`base:1@cfg2+distilled:3`).")  # fmt: skip
        if load_error:
            gr.Markdown(f"**The pair did not load:** {load_error}", elem_id="load-error")
        with gr.Accordion("Sampling (empty: the pair's default)", open=False), gr.Row():
            steps = gr.Number(label="distilled steps", value=getattr(defaults, "num_inference_steps", None),
                              precision=0, elem_id="steps")  # fmt: skip
            base_steps = gr.Number(label="base steps (base alone / @own)", precision=0, elem_id="base-steps",
                                   value=getattr(defaults, "base_num_inference_steps", None))  # fmt: skip
            base_cfg = gr.Number(label="base guidance", value=getattr(defaults, "base_guidance_scale", None),
                                 elem_id="base-cfg")  # fmt: skip
        sampling = [steps, base_steps, base_cfg]
        prompt = gr.Textbox(label="prompt", value=DEFAULT_PROMPT, elem_id="prompt")
        with gr.Tab("Compare"):
            with gr.Row():
                count = gr.Slider(1, 64, value=8, step=1, label="seeds", elem_id="count")
                first = gr.Number(label="first seed", value=0, precision=0, elem_id="first-seed")
            named = gr.CheckboxGroup(list(NAMED_VARIANTS), value=list(DEFAULT_VARIANTS), label="variants",
                                     elem_id="variants")  # fmt: skip
            free = gr.Textbox(label="more variants (comma-separated, the variant grammar)", elem_id="variant-text")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", elem_id="stop")
            status = gr.Markdown(elem_id="compare-status")
            numbers = gr.Dataframe(headers=list(TABLE_HEADERS), label="numbers", elem_id="numbers", interactive=False)
            with gr.Column(elem_id="grids"):
                grids = [gr.Image(type="pil", visible=False, elem_id=f"grid-{i}", show_label=False)
                         for i in range(MAX_GRIDS)]  # fmt: skip

            def on_compare(*args: Any, progress: Any = PROGRESS) -> Iterator[tuple]:
                yield from compare_handler(state, *args, progress=progress)

            event = run.click(on_compare, [prompt, count, first, named, free, *sampling], [status, numbers, *grids])
            stop.click(None, cancels=[event])
        with gr.Tab("Trajectory"):
            with gr.Row():
                seed = gr.Number(label="seed", value=0, precision=0, elem_id="trace-seed")
                trace = gr.Button("Trace", variant="primary", elem_id="trace")
            trace_named = gr.CheckboxGroup(list(NAMED_VARIANTS), value=["base", "distilled", "hybrid:1"],
                                           label="variants", elem_id="trace-variants")  # fmt: skip
            trace_free = gr.Textbox(label="more variants", elem_id="trace-variant-text")
            switch = gr.Markdown(elem_id="switch")
            step = gr.Slider(1, 50, value=1, step=1, label="step (of the longest run; shorter runs at the same "
                             "fraction)", elem_id="step")  # fmt: skip
            frame = gr.Image(label="x0-hat at this step", type="pil", elem_id="frame")
            curves = gr.Image(label="commitment curves", type="pil", elem_id="curves")
            trace.click(lambda *a: trajectory_handler(state, *a), [prompt, seed, trace_named, trace_free, *sampling,
                        step], [switch, views, frame, curves, step])  # fmt: skip
            step.change(frame_handler, [views, step], [frame])
        with gr.Tab("Control"):
            shipped = shipped_adapter(state.name)
            with gr.Row():
                upload = gr.File(label="adapter file (LoRA / slider)", type="filepath", elem_id="adapter-upload")
                path = gr.Textbox(label="or its path", value=str(shipped) if shipped else "", elem_id="adapter-path")
            with gr.Row():
                scale = gr.Slider(-3, 3, value=1, step=0.5, label="scale", elem_id="scale")
                on = gr.Radio(list(ON_CHOICES), value="both", label="apply to", elem_id="on")
                start = gr.Number(label="start timestep (empty: every step)", value=None, elem_id="start")
            with gr.Row():
                control_count = gr.Slider(1, 32, value=6, step=1, label="seeds", elem_id="control-count")
                control_first = gr.Number(label="first seed", value=0, precision=0)
                variant = gr.Textbox(label="variant", value="hybrid:1", elem_id="control-variant")
            apply = gr.Button("Apply", variant="primary", elem_id="apply")
            control_status = gr.Markdown(elem_id="control-status")
            control_grid = gr.Image(label="before / after", type="pil", elem_id="control-grid")
            inputs = [prompt, control_count, control_first, variant, upload, path, scale, on, start, *sampling]
            apply.click(lambda *a: control_handler(state, *a), inputs, [control_status, control_grid])
            scale.change(lambda *a: control_handler(state, *a), inputs, [control_status, control_grid])
    return page


def theme() -> Any:
    """The default theme on system fonts (no web-font download)."""
    gr = require_gradio()
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def launch(state: AppState, host: str = "127.0.0.1", port: int | None = None, preload: bool = True,
           block: bool = True) -> Any:  # fmt: skip
    """Load the pair (an error is shown in the page, not raised), build the page and serve it on host:port."""
    require_gradio()
    error = state.preload() if preload else None
    page = build_app(state, error)
    page.queue(default_concurrency_limit=1)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
                theme=theme(), show_error=True, quiet=False)  # fmt: skip
    return page
