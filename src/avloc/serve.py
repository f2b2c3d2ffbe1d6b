"""``avloc serve``: a web page (Gradio) that shows what is making the sound in a video.

Upload a video, or pick one of the bundled demo clips (:data:`avloc.demo.DEMO_CLIPS`), and
press *Localise*: :func:`avloc.localize_video.localize_video` runs with a progress bar, then
the page shows the overlay video with its sound, the event class probabilities over time, a
slider that scrubs the steps (each step's frame, as the model saw it, with its heat map, peak
and boxes) and ``boxes.json`` / ``heatmaps.npz`` to download.

Offline and contained by design:

- nothing is fetched from the internet: the theme uses the system's fonts, Gradio's analytics
  are off, there is no share link and no server-side rendering;
- the server binds to 127.0.0.1 unless told otherwise;
- everything it writes goes under its work folder (``--work``, else a new temporary folder
  that is removed when the server stops): Gradio's uploads and cache (``GRADIO_TEMP_DIR``),
  matplotlib's config (``MPLCONFIGDIR``) and one folder per localisation under ``runs/``, of
  which the newest ``--keep-runs`` stay (:func:`prune_runs`; Gradio deletes its own copies once
  an hour old, :data:`GRADIO_CACHE_CLEANING`);
- the model is loaded once, when the server starts, and requests queue: one localisation at a
  time (Gradio's queue, concurrency limit 1);
- inputs are checked before any work (:func:`check_video`): not a video, no sound, longer than
  ``max_seconds`` or larger than ``max_mb`` is refused with a one-line message on the page.

Gradio is an optional extra (``pip install -e '.[web]'``), imported only by :func:`serve` and
:func:`build_page`; :func:`check_video`, :func:`localise` and :func:`step_image` need only avloc.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from avloc.types import AvlocError, VideoInfo

if TYPE_CHECKING:  # hints only: the page's module stays light until it localises
    from avloc.localizer import Localizer

log = logging.getLogger(__name__)

WEB_EXTRA = "avloc serve needs the web extra: pip install -e '.[web]'"
MEGABYTE = 1_000_000
GRADIO_CACHE_CLEANING = (600, 3600)  # (every, older than) seconds: Gradio's delete_cache
# System fonts only: Gradio's default theme would ask for web fonts.
SANS_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace")
VIEW_HEIGHT = 320  # pixels of the page's videos and step frame
TOP_CLASSES = 5  # classes drawn on the probability plot: the most probable on average


@dataclass(frozen=True)
class ServeConfig:
    """What ``avloc serve`` runs with (its flags)."""

    model: str = "default"
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 7860
    max_seconds: float = 120.0
    max_mb: float = 200.0
    work: Path | None = None  # None: a new temporary folder, removed when the server stops
    keep_runs: int = 20  # result folders kept under work/runs: the newest, older ones removed


@dataclass
class StepView:
    """One localised video, as the step slider needs it (kept in the page's session state)."""

    video: Path
    duration: float
    fps: float
    times: np.ndarray  # (T,) step times, seconds
    heatmaps: np.ndarray  # (T, h, w)
    probabilities: np.ndarray  # (T, K); (T, 0) without a classifier
    classes: list[str]
    boxes: list[np.ndarray]  # per step (N, 4) xyxy, video pixels
    scores: list[np.ndarray]  # per step (N,)


@dataclass
class RunResult:
    """What one press of *Localise* produced."""

    out: Path
    overlay: Path
    downloads: list[Path]  # boxes.json, heatmaps.npz
    view: StepView
    summary: str


def check_video(path: str | os.PathLike, max_seconds: float, max_mb: float, name: str | None = None) -> VideoInfo:
    """Refuse what the page will not localise; ``name`` (default: the file's name) is how the
    messages call the file.

    Raises:
        AvlocError: one line naming the file: too large (over ``max_mb`` megabytes, checked
            before the file is opened), not a readable video, no video or no audio stream,
            longer than ``max_seconds``.
    """
    from avloc.io.decode import probe

    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise AvlocError(f"{name}: no such file")
    size = path.stat().st_size
    if size > max_mb * MEGABYTE:
        raise AvlocError(f"{name}: too large ({size / MEGABYTE:.1f} MB; this server takes at most {max_mb:g} MB)")
    try:
        info = probe(path)
    except AvlocError as error:  # the server's own copy is named by the file's name only
        raise AvlocError(str(error).replace(str(path), name)) from None
    if info.duration > max_seconds:
        raise AvlocError(f"{name}: too long ({info.duration:.1f} s; this server takes at most {max_seconds:g} s)")
    if not info.has_audio:
        raise AvlocError(f"{name}: no audio stream; localising the sounding object needs the soundtrack")
    return info


def demo_videos() -> list[tuple[Path, str]]:
    """The bundled demo clips and a label for each (its id and scenario tags)."""
    from avloc.data.manifest import load_manifest
    from avloc.demo import DEMO_CLIPS

    return [(record.video, f"{record.id} ({'/'.join(record.tags)})") for record in load_manifest(DEMO_CLIPS).records]


def localise(video: str | os.PathLike, runs: str | os.PathLike, model: str = "default", device: str = "cpu",
             max_seconds: float = 120.0, max_mb: float = 200.0, localizer: Localizer | None = None,
             keep_runs: int | None = None) -> RunResult:
    """Check ``video`` (:func:`check_video`) and localise it into a new folder under ``runs``.

    Progress goes through localize_video's tqdm bars (the page tracks them). ``localizer``
    (:func:`avloc.localize_video.localizer_for` of ``model``, made once when the page starts)
    spares every request the model's loading. A failed run leaves no folder; after a good one
    only the newest ``keep_runs`` folders of ``runs`` stay (None: all), this one among them.

    Raises:
        AvlocError: the video is refused, or localisation fails.
    """
    from avloc.localize_video import localize_video

    video = Path(video)
    info = check_video(video, max_seconds, max_mb)
    runs = Path(runs)
    runs.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"{time.strftime('%H%M%S')}-{video.stem[:40]}-", dir=runs))
    started = time.perf_counter()
    try:
        result = localize_video(video, out, model=model, device=device, progress=True, localizer=localizer)
    except BaseException as error:
        shutil.rmtree(out, ignore_errors=True)  # a failed run leaves no folder
        if isinstance(error, AvlocError):  # e.g. a stream damaged past its headers: named as the person knows the file
            raise AvlocError(str(error).replace(str(video), video.name)) from None
        raise
    seconds = time.perf_counter() - started
    if keep_runs is not None:
        prune_runs(runs, keep_runs, current=out)
    view = StepView(video=video, duration=info.duration, fps=result.fps, times=result.times,
                    heatmaps=result.heatmaps, probabilities=result.probabilities, classes=result.classes,
                    boxes=result.boxes, scores=result.scores)
    summary = (f"**{video.name}**: {len(result.times)} steps at {result.fps:g} per second, "
               f"{result.frames_written} frames, localised in {seconds:.1f} s on {device}.")
    if result.probabilities.shape[1]:
        mean = result.probabilities.mean(axis=0)  # (K,)
        summary += f" Most probable event class over the clip: **{result.classes[int(mean.argmax())]}** " \
                   f"({100 * mean.max():.0f}% on average)."
    files = result.files()
    return RunResult(out=out, overlay=files["overlay.mp4"], downloads=[files["boxes.json"], files["heatmaps.npz"]],
                     view=view, summary=summary)


def step_image(view: StepView, k: int) -> np.ndarray:
    """Step ``k``'s frame at the video's size, as the model saw it, with its heat map, peak,
    boxes and a caption (time, the step's class): ``(H, W, 3)`` uint8 RGB."""
    import torch

    from avloc.io.decode import iter_steps
    from avloc.render import annotated_frame, heat_layer

    if not 0 <= k < len(view.times):
        raise AvlocError(f"step {k} is outside the {len(view.times)} steps of {view.video.name}")
    half = 0.5 / view.fps
    moment = float(view.times[k])
    # The one step of [moment - half, moment + half) is at ``moment``: the frame the model saw.
    step = next(iter_steps(view.video, fps=view.fps, size=None, start=max(0.0, moment - half), end=moment + half))
    frame = np.ascontiguousarray((step.frame * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())  # (H, W, 3)
    caption = f"step {k + 1}/{len(view.times)}  {moment:.2f} s"
    if view.probabilities.shape[1]:
        caption += f"  {view.classes[int(view.probabilities[k].argmax())]} {100 * view.probabilities[k].max():.0f}%"
    layer = heat_layer(torch.from_numpy(view.heatmaps[k]), frame.shape[:2])
    return annotated_frame(frame, layer, view.boxes[k], view.scores[k], caption)


def probability_plot(view: StepView):
    """The event class probabilities over time (matplotlib Figure): the :data:`TOP_CLASSES`
    most probable classes on average, background dashed."""
    from matplotlib.figure import Figure  # not pyplot: no global state across the server's threads

    figure = Figure(figsize=(7.0, 2.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    if not view.probabilities.shape[1]:
        axes.text(0.5, 0.5, "this model has no classifier: heat maps only", ha="center", va="center")
        axes.set_axis_off()
        return figure
    order = np.argsort(-view.probabilities.mean(axis=0))[:TOP_CLASSES]
    for index in order:
        name = view.classes[int(index)]
        axes.plot(view.times, view.probabilities[:, index], label=name,
                  linestyle="--" if name == "background" else "-", linewidth=1.6)
    axes.set_xlim(0, max(view.duration, float(view.times[-1]) + 0.5 / view.fps))
    axes.set_ylim(0, 1)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("probability")
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    return figure


def prune_runs(runs: Path, keep: int, current: Path) -> None:
    """Remove the result folders of ``runs`` but the newest ``keep`` (by modification time),
    never ``current``: a server that runs for weeks does not fill its disk."""
    folders = sorted((path for path in runs.iterdir() if path.is_dir() and path != current),
                     key=lambda path: path.stat().st_mtime, reverse=True)
    for old in folders[max(keep - 1, 0) :]:
        shutil.rmtree(old, ignore_errors=True)


def prepare_work(work: str | os.PathLike | None) -> tuple[Path, bool]:
    """The server's work folder (a new temporary one when ``work`` is None) and whether this call
    created it. Points Gradio's and matplotlib's files into it; call before importing gradio
    (which reads ``GRADIO_TEMP_DIR`` when imported) or matplotlib."""
    if work is None:
        folder, created = Path(tempfile.mkdtemp(prefix="avloc-serve-")), True
    else:
        folder = Path(work).resolve()
        if folder.exists() and not folder.is_dir():
            raise AvlocError(f"{folder}: exists and is not a folder")
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder / "gradio" / "examples")
    os.environ["MPLCONFIGDIR"] = str(folder / "matplotlib")
    os.environ["HF_HUB_OFFLINE"] = "1"
    return folder, created


def build_page(config: ServeConfig, work: Path, device: str, localizer: Localizer | None = None):
    """The Gradio page (a ``gr.Blocks``), queued: one localisation at a time (so requests can
    share ``localizer``)."""
    import gradio as gr

    runs = work / "runs"
    demos = demo_videos()

    def run(video: str | None, progress=gr.Progress(track_tqdm=True)) -> tuple[Any, ...]:
        if not video:
            raise gr.Error("Upload a video or pick a demo clip first.", duration=None)
        progress(0.0, desc="checking the video")
        try:
            result = localise(video, runs, model=config.model, device=device, max_seconds=config.max_seconds,
                              max_mb=config.max_mb, localizer=localizer, keep_runs=config.keep_runs)
        except AvlocError as error:
            raise gr.Error(str(error), duration=None) from None
        last = len(result.view.times) - 1
        return (result.summary, str(result.overlay), probability_plot(result.view),
                gr.Slider(minimum=0, maximum=max(last, 1), value=0, step=1, interactive=last > 0),
                step_image(result.view, 0), [str(path) for path in result.downloads], result.view)

    def show_step(view: StepView | None, k: float) -> Any:
        if view is None:
            return None
        return step_image(view, int(min(max(round(k), 0), len(view.times) - 1)))

    intro = ("Find **which object is making the sound** in a video. Upload a video with a soundtrack "
             f"(at most {config.max_seconds:g} s and {config.max_mb:g} MB) or pick a demo clip, then press "
             f"**Localise**. Model: `{config.model}` on `{device}`.")
    # Gradio's own copies of uploads and results: every 10 minutes, those older than an hour go.
    with gr.Blocks(title="avloc", analytics_enabled=False, delete_cache=GRADIO_CACHE_CLEANING) as page:
        gr.Markdown(f"# avloc: sounding object localisation\n{intro}")
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video", sources=["upload"], height=VIEW_HEIGHT, elem_id="input-video")
                gr.Examples(examples=[[str(path)] for path, _ in demos], inputs=[video],
                            example_labels=[label for _, label in demos],
                            label="Demo clips (the built-in model's benchmark, test split)")
                button = gr.Button("Localise", variant="primary", elem_id="localise")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=1):
                overlay = gr.Video(label="Overlay, with sound", interactive=False, height=VIEW_HEIGHT,
                                   elem_id="overlay")
                downloads = gr.File(label="Downloads: boxes.json, heatmaps.npz", file_count="multiple",
                                    interactive=False, height=120, elem_id="downloads")
        with gr.Row():
            with gr.Column(scale=1):
                plot = gr.Plot(label="Event class probabilities over time", elem_id="probabilities")
            with gr.Column(scale=1):
                slider = gr.Slider(minimum=0, maximum=1, value=0, step=1, label="Step (scrub)", interactive=False,
                                   elem_id="step")
                frame = gr.Image(label="The step's frame: heat map, peak and boxes", type="numpy",
                                 interactive=False, format="png", height=VIEW_HEIGHT, elem_id="step-frame")
        state = gr.State(None)
        button.click(run, inputs=[video], outputs=[status, overlay, plot, slider, frame, downloads, state],
                     concurrency_limit=1, concurrency_id="localise")
        # Scrubbing is cheap (one frame decoded): it does not wait behind a localisation.
        slider.change(show_step, inputs=[state, slider], outputs=[frame], concurrency_limit=2,
                      concurrency_id="step", show_progress="hidden", trigger_mode="always_last")
    page.queue(default_concurrency_limit=1)
    return page


def serve(config: ServeConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the page until interrupted (Ctrl+C). ``on_ready`` is called with the page's address.

    Raises:
        AvlocError: gradio is not installed, a bad flag or model, or the port is taken.
    """
    if not config.max_seconds > 0 or not config.max_mb > 0:
        raise AvlocError(f"--max-seconds and --max-mb must be positive, got {config.max_seconds:g} and "
                         f"{config.max_mb:g}")
    if config.keep_runs < 1:
        raise AvlocError(f"--keep-runs must be at least 1, got {config.keep_runs}")
    if not 0 < config.port < 65536:
        raise AvlocError(f"--port must be between 1 and 65535, got {config.port}")
    if importlib.util.find_spec("gradio") is None:
        raise AvlocError(WEB_EXTRA)
    work, created = prepare_work(config.work)
    launched = False
    try:
        from avloc.devices import resolve_device
        from avloc.localize_video import localizer_for

        device = str(resolve_device(config.device))
        localizer = localizer_for(config.model, device)  # once: a bad model is refused before the page starts
        import gradio as gr

        page = build_page(config, work, device, localizer)
        theme = gr.themes.Default(font=list(SANS_FONTS), font_mono=list(MONO_FONTS))
        try:
            _, url, _ = page.launch(
                server_name=config.host, server_port=config.port, share=False, inbrowser=False,
                prevent_thread_lock=True, show_error=True, ssr_mode=False, mcp_server=False, enable_monitoring=False,
                max_file_size=int(config.max_mb * MEGABYTE), theme=theme, footer_links=[], quiet=True,
                allowed_paths=sorted({str(path.parent) for path, _ in demo_videos()}))
        except OSError:  # Gradio's message names its own environment variables: say it in avloc's terms
            raise AvlocError(f"cannot serve on {config.host}:{config.port}: the port is taken or the address is not "
                             "this machine's; pick another --port or --host") from None
        launched = True
        log.info("work folder %s", work)
        if on_ready is not None:
            on_ready(url)
        if threading.current_thread() is threading.main_thread():  # a terminated server cleans up as on Ctrl+C
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            page.block_thread()
        finally:
            page.close()
    finally:  # a temporary folder always goes; a --work folder made for a server that never started too
        if config.work is None or (created and not launched):
            shutil.rmtree(work, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
