"""Cross-modality localisation (AVE, ECCV 2018, section 3.3 and eq. 8): A2V and V2A.

Given the per-step audio and visual embeddings of a clip in a common space (e.g. AVDLN's,
:mod:`avloc.models.avdln`) and the clip's audio-visual event, a run of ``l`` steps:

- A2V: slide the event's audio embeddings ``(l, D)`` over the visual sequence ``(T, D)`` and
  return the start ``t*`` of the window of least total Euclidean distance (eq. 8, eq. 9);
- V2A: the same with the event's visual embeddings over the audio sequence.

A clip counts as a hit when the predicted start equals the true start exactly. Starts are
0-based step indices; ties go to the earliest window. At 4 steps per second an exact match
means the same quarter of a second, stricter than the paper's one-second segments.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from avloc.data.sources import load_dataset, open_features
from avloc.data.windows import FeatureWindows
from avloc.trained import load_trained
from avloc.models.blocks import euclidean_distance
from avloc.models.contract import LocalizationModel
from avloc.types import AvlocError



def window_costs(query: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
    """The cost of eq. 8 for every start: ``sum_s D(sequence[t + s], query[s])``.

    ``query (l, D)``, ``sequence (T, D)`` with ``1 <= l <= T`` -> ``(T - l + 1,)``.
    """
    if query.ndim != 2 or sequence.ndim != 2 or query.shape[1] != sequence.shape[1]:
        raise AvlocError(f"cross-modal: expected query (l, D) and sequence (T, D), got {tuple(query.shape)} "
                         f"and {tuple(sequence.shape)}")
    if not 1 <= len(query) <= len(sequence):
        raise AvlocError(f"cross-modal: the query has {len(query)} steps, the sequence {len(sequence)}")
    windows = sequence.unfold(0, len(query), 1).transpose(1, 2)  # (T, D) -> (T-l+1, D, l) -> (T-l+1, l, D)
    return euclidean_distance(windows, query).sum(dim=-1)  # (T-l+1, l, D), (l, D) -> (T-l+1,)


def a2v(audio: torch.Tensor, visual: torch.Tensor) -> int:
    """Visual localisation from audio: the start of the visual window that matches ``audio (l, D)``
    best within ``visual (T, D)`` (eq. 8)."""
    return int(window_costs(audio, visual).argmin())


def v2a(visual: torch.Tensor, audio: torch.Tensor) -> int:
    """Audio localisation from visual content: the start of the audio window that matches
    ``visual (l, D)`` best within ``audio (T, D)``."""
    return int(window_costs(visual, audio).argmin())


def event_run(step_labels: torch.Tensor, background: int) -> tuple[int, int] | None:
    """``(start, length)`` of the clip's audio-visual event, the steps whose label is not
    ``background``, when they form one run shorter than the clip (the paper's short-event
    videos); None otherwise (no event, the whole clip, or several runs)."""
    event = (step_labels != background).long()  # (T,)
    steps = int(event.sum())
    if steps == 0 or steps == len(event):
        return None
    start = int(event.argmax())
    if int(event[start:start + steps].sum()) != steps:
        return None
    return start, steps


def clip_embeddings(model: LocalizationModel, visual: torch.Tensor, audio: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A model's per-step ``(audio (T, D), visual (T, D))`` embeddings of one clip's feature maps
    ``visual (T, Cv, h, w)``, ``audio (T, Ca, m, n)``: its ``embeddings["audio"]`` and
    ``embeddings["visual"]``, declared to share a space (``model.common_embedding``)."""
    if not model.common_embedding:
        raise AvlocError(f"{type(model).__name__} gives no common audio-visual embedding (embeddings 'audio' and "
                         "'visual' of one shape (B, T, D)); cross-modal localisation needs a model such as avdln")
    output = model(visual=visual[None], audio=audio[None])  # (T, ...) -> (1, T, ...)
    return output.embeddings["audio"][0], output.embeddings["visual"][0]  # (1, T, D) -> (T, D)


@torch.no_grad()
def cross_modal_accuracy(
    model: LocalizationModel, clips: Iterable[dict], *, background: int, device: str | torch.device = "cpu"
) -> dict:
    """A2V and V2A accuracy of a trained ``model`` over whole ``clips`` (run in eval mode).

    Args:
        model: gives per-step ``embeddings["audio"]`` and ``["visual"]`` ``(B, T, D)`` in one space.
        clips: dicts with ``visual (T, Cv, h, w)``, ``audio (T, Ca, m, n)`` and ``step_labels (T,)``
            (the samples of :class:`avloc.data.windows.FeatureWindows` with ``steps=None``).
        background: the background class index (the last class).
        device: where the model is.

    Returns:
        ``{"a2v": accuracy, "v2a": accuracy, "clips": scored, "skipped": skipped}``: only clips whose
        event is one run shorter than the clip are scored (:func:`event_run`); the others are counted.

    Raises:
        AvlocError: no clip could be scored, or the model has no common embedding.
    """
    model.eval()
    hits, scored, skipped = {"a2v": 0, "v2a": 0}, 0, 0
    for clip in clips:
        run = event_run(clip["step_labels"], background)
        if run is None:
            skipped += 1
            continue
        start, length = run
        audio, visual = clip_embeddings(model, clip["visual"].to(device), clip["audio"].to(device))
        hits["a2v"] += a2v(audio[start:start + length], visual) == start
        hits["v2a"] += v2a(visual[start:start + length], audio) == start
        scored += 1
    if scored == 0:
        raise AvlocError(f"cross-modal: none of the {skipped} clips has one event shorter than the clip")
    return {"a2v": hits["a2v"] / scored, "v2a": hits["v2a"] / scored, "clips": scored, "skipped": skipped}


def evaluate_cross_modal(source: str | os.PathLike, dataset: str | os.PathLike, features: str | None,
                         split: str = "test", device: str | torch.device = "cpu") -> dict:
    """A2V / V2A exact-match accuracy (AVE, ECCV 2018, eq. 8) of a model with a common embedding.

    Reads whole clips from a feature cache; see :func:`avloc.cross_modal.cross_modal_accuracy`.
    """
    if features is None:
        raise AvlocError("--task cross-modal reads a feature cache: pass --features FILE.h5")
    records = load_dataset(dataset, require_videos=False).split(split)
    if not records:
        raise AvlocError(f"{dataset}: the {split} split is empty")
    trained = load_trained(source, device)
    clips = FeatureWindows(open_features(features), records, trained.classes, steps=None)
    scores = cross_modal_accuracy(trained.head, clips, background=len(trained.classes) - 1, device=device)
    return {"source": str(source), "split": split, "task": "cross-modal", **scores}
