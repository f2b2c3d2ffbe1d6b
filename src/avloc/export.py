"""`avloc export`: the per-step streaming localiser as one ONNX or TorchScript graph.

One call of the exported graph is one step of :class:`avloc.localizer.Localizer`: both encoders
and, for STM, the memory step (:meth:`avloc.models.stm.STM.step`), with the memory state as
explicit inputs and outputs of a fixed shape. The log-mel front end (:func:`avloc.audio.log_mel`)
stays outside the graph: the caller computes the log-mel spectrogram of the step's audio segment
(``round(sample_rate / fps)`` mono samples centred on the frame's time; the settings are in the
file's metadata) and feeds it in.

Inputs and outputs of an STM export (all float32; B is free, the rest is fixed at export):

============================ ================== ==================================================
name                         shape              meaning
============================ ================== ==================================================
``frame``                    (B, 3, H, W)       RGB frame in [0, 1], H = W = the model's frame size
``logmel``                   (B, 1, M, F)       log-mel of the step's audio segment
``memory_audio``             (B, K, C, m, n)    projected audio maps x_a of the last K steps
``memory_visual``            (B, K, C, h, w)    projected visual maps x_v of the last K steps
``memory_audio_visual``      (B, K, C, h, w)    cross-modal maps x_av (Algorithm 1 line 4)
``memory_mask``              (B, K)             1.0 where a slot holds a step, 0.0 where empty
``heatmap``                  (B, h, w)          localisation map, softmax over the h x w cells
``logits``                   (B, N)             class logits (N classes, background last)
``probabilities``            (B, N)             softmax of ``logits``
``next_memory_audio`` ...    as the inputs      the state after this step: feed it to the next one
``next_memory_mask``         (B, K)
============================ ================== ==================================================

The memory state, a design choice made here: the PyTorch stream keeps a
:class:`avloc.models.memory.MemoryBank` of up to K steps, oldest first, which grows from empty.
The export keeps K slots instead, oldest first, newest in slot K-1, and a mask of the filled
slots: a new stream starts from zeros (all slots empty, mask 0), and each step shifts the slots
left by one, writes itself into slot K-1 and sets its mask to 1. Empty slots are masked out of
every temporal attention (their weight is exactly 0), so the k filled slots play the part of a
bank of k steps and a step gives the outputs of :meth:`avloc.models.stm.STM.step` from an empty
state (tested to 1e-4 over more steps than K, in onnxruntime and TorchScript). Every stream of a
batch has its own mask; the state of a variant that skips line 5 (``u``, ``none``) still carries
``memory_audio_visual``, unread, so that every STM export has the same inputs.

A model whose every step depends on that step alone (``stepwise``: EZ-VSL, AVDLN) has no state:
its export takes ``frame`` and ``logmel`` and gives ``heatmap`` (and ``logits``,
``probabilities`` when it has a classifier). A model that cannot stream is refused.

ONNX (opset :data:`ONNX_OPSET`, the torch.export-based exporter, which needs ``onnx`` and
``onnxscript``) stores the inputs, outputs and front-end settings in the model's
``metadata_props``; TorchScript (``torch.jit.trace``, deprecated by torch but supported) stores
them as the extra file ``avloc_export.json`` (``torch.jit.load(path, _extra_files=...)``). Both
are written atomically and, before they are, run once against the PyTorch model (onnxruntime
when installed).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from avloc import __version__
from avloc.atomic import atomic_path
from avloc.audio import MelConfig, log_mel
from avloc.models.encoders import Encoder
from avloc.models.memory import MemoryBank
from avloc.models.stm import STM
from avloc.trained import TrainedModel, load_trained
from avloc.types import AvlocError

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 20
EXTRA_FILE = "avloc_export.json"  # the TorchScript file's metadata
STATE_NAMES = ("memory_audio", "memory_visual", "memory_audio_visual", "memory_mask")
CHECK_TOLERANCE = 1e-3  # the export's own check; tests/test_export.py holds it to 1e-4 over a stream


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the exported graph: ``shape`` with ``"B"`` for the free batch size."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    meaning: str

    def describe(self) -> str:
        return f"{self.name} ({', '.join(map(str, self.shape))}) {self.dtype}: {self.meaning}"


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        path: the exported file.
        format: "onnx" or "torchscript".
        inputs, outputs: the graph's tensors, in call order.
        metadata: what the file's metadata holds (string values; JSON where structured).
        difference: the largest absolute difference between the file (run by onnxruntime or
            torch.jit) and the PyTorch model over two steps; None when onnxruntime is missing.
    """

    path: Path
    format: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    difference: float | None


class StreamingStep(nn.Module):
    """One step of the streaming localiser with its state as tensors (see the module docstring).

    ``forward(frame, logmel[, memory_audio, memory_visual, memory_audio_visual, memory_mask])``
    (the state only for STM; the argument names are the graph's input names) returns
    ``(heatmap, [logits, probabilities,] [next_memory_audio, ..., next_memory_mask])``.

    Args:
        head: a model that streams, in eval mode (STM with a causal memory, or a stepwise one).
        visual_encoder, audio_encoder: its encoders, in eval mode.
    """

    def __init__(self, head: nn.Module, visual_encoder: Encoder, audio_encoder: Encoder) -> None:
        super().__init__()
        self.head = head
        self.visual_encoder = visual_encoder
        self.audio_encoder = audio_encoder
        self.memory = isinstance(head, STM)

    def forward(
        self,
        frame: torch.Tensor,
        logmel: torch.Tensor,
        memory_audio: torch.Tensor | None = None,
        memory_visual: torch.Tensor | None = None,
        memory_audio_visual: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        visual = self.visual_encoder(frame)  # (B, 3, H, W) -> (B, Cv, h, w)
        audio = self.audio_encoder(logmel)  # (B, 1, M, F) -> (B, Ca, m, n)
        if not self.memory:
            output = self.head.stream(visual.unsqueeze(1), audio.unsqueeze(1), None)[0]  # a stream of one step
            return self._read(output.heatmap, output.logits)
        head = self.head
        x_v = head.visual_projection(visual).unsqueeze(1)  # (B, C, h, w) -> (B, 1, C, h, w)
        x_a = head.audio_projection(audio).unsqueeze(1)  # (B, C, m, n) -> (B, 1, C, m, n)
        filled = memory_mask > 0.5  # (B, K)
        window = torch.cat([filled, torch.ones_like(filled[:, :1])], dim=1)  # (B, K + 1): the slots, then this step
        # (B, K + 1) -> (B, 1, 1, K + 1): TemporalAttention's (Tq, Tk) mask, per stream, broadcast over heads
        window = window[:, None, None, :]
        # Algorithm 1 as the memory layer runs it, the slots' mask for its window.
        memory = head.memory.attend(x_a, x_v, MemoryBank(memory_audio, memory_visual, memory_audio_visual), window)
        output = head.read_out(memory, visual.unsqueeze(1))  # STM's own map and classifier
        state = (_shift(memory_audio, x_a), _shift(memory_visual, x_v), _shift(memory_audio_visual, memory.cross_modal),
                 _shift(memory_mask, torch.ones_like(memory_mask[:, :1])))
        return self._read(output.heatmap, output.logits) + state

    def _read(self, heatmap: torch.Tensor, logits: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``heatmap (B, 1, h, w)``, ``logits (B, 1, N)`` of one step -> (B, h, w)[, (B, N), (B, N)]."""
        if logits is None:
            return (heatmap[:, 0],)
        return heatmap[:, 0], logits[:, 0], logits[:, 0].softmax(dim=-1)


def _shift(slots: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Drop the oldest slot, append ``new``: ``(B, K, ...)``, ``(B, 1, ...)`` -> ``(B, K, ...)``."""
    return torch.cat([slots, new], dim=1)[:, 1:]


def export_model(source: str | os.PathLike, fmt: str, out: str | os.PathLike) -> ExportResult:
    """Export the trained model ``source`` ("default" or a checkpoint) as ``fmt`` to ``out``.

    Raises:
        AvlocError: an unknown format, a model that cannot stream, a checkpoint that does not
            load, missing ONNX packages, an ``out`` that cannot be written. ``out`` is written
            atomically: on any failure no file (and no part of one) is left there.
    """
    if fmt not in FORMATS:
        raise AvlocError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:
            raise AvlocError(f"ONNX export needs the packages {' and '.join(missing)}: "
                             "pip install -e '.[test]' installs the tested versions")
    trained = load_trained(source)
    refusal = trained.head.stream_refusal()
    if refusal is not None:
        raise AvlocError(f"{trained.source}: model {trained.config.model} cannot be exported as a stream: {refusal}")
    if not isinstance(trained.head, STM) and not trained.head.stepwise:
        raise AvlocError(f"{trained.source}: model {trained.config.model} streams with a state that export does not "
                         "know; export supports STM's memory and models without a state")
    visual_encoder, audio_encoder, mel = trained.encoders(torch.device("cpu"))
    step = StreamingStep(trained.head, visual_encoder, audio_encoder).eval()
    frame_size = trained.config.size if trained.config.size is not None else int(visual_encoder.input_spec["size"])
    segment = round(mel.sample_rate / trained.config.fps)
    logmel_shape = tuple(log_mel(torch.zeros(1, segment), mel).shape[1:])  # (1, M, F)
    inputs, outputs = _specs(step, frame_size, logmel_shape)
    metadata = _metadata(trained, fmt, inputs, outputs, mel, segment)
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape checks fixed at export: meant
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's own deprecation notices
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)  # the exporter's naming
        examples = _examples(inputs, batch=2, seed=0)
        if fmt == "onnx":
            _save_onnx(step, examples, inputs, outputs, metadata, tmp)
        else:
            traced = torch.jit.trace(step, tuple(examples.values()))
            torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: json.dumps(metadata)})
        difference = _check(step, fmt, tmp, inputs, outputs)
    return ExportResult(Path(out), fmt, inputs, outputs, metadata, difference)


def empty_state(inputs: list[TensorSpec], batch: int = 1) -> dict[str, torch.Tensor]:
    """The state of a new stream (zeros, every slot empty) for the exported graph's state inputs."""
    return {spec.name: torch.zeros(_concrete(spec.shape, batch)) for spec in inputs if spec.name in STATE_NAMES}


def _specs(step: StreamingStep, frame_size: int, logmel_shape: tuple[int, ...]
           ) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs, their shapes found by running the model on zeros."""
    frame, logmel = torch.zeros(1, 3, frame_size, frame_size), torch.zeros(1, *logmel_shape)
    inputs = [TensorSpec("frame", ("B", 3, frame_size, frame_size), "float32", "RGB frame in [0, 1]"),
              TensorSpec("logmel", ("B", *logmel_shape), "float32",
                         "log-mel of the step's audio segment (avloc.audio.log_mel, settings in 'avloc.mel')")]
    with torch.no_grad():
        visual, audio = step.visual_encoder(frame), step.audio_encoder(logmel)
        if step.memory:
            channels = step.head.visual_projection(visual).shape[1]
            k, (h, w), (m, n) = step.head.memory.memory_size, visual.shape[-2:], audio.shape[-2:]
            state = [TensorSpec("memory_audio", ("B", k, channels, m, n), "float32",
                                "projected audio maps of the last K steps, oldest first (zeros: empty)"),
                     TensorSpec("memory_visual", ("B", k, channels, h, w), "float32",
                                "projected visual maps of the last K steps, oldest first"),
                     TensorSpec("memory_audio_visual", ("B", k, channels, h, w), "float32",
                                "cross-modal maps (Algorithm 1 line 4) of the last K steps, oldest first"),
                     TensorSpec("memory_mask", ("B", k), "float32", "1.0 where a slot holds a step, 0.0 where empty")]
            inputs += state
        produced = step(*(torch.zeros(_concrete(spec.shape, 1)) for spec in inputs))
    outputs = [TensorSpec("heatmap", ("B", *produced[0].shape[1:]), "float32",
                          "localisation map at feature resolution, sums to 1 over the cells")]
    if len(produced) - (len(state) if step.memory else 0) == 3:  # a classifier: logits and probabilities
        classes = produced[1].shape[1]
        outputs += [TensorSpec("logits", ("B", classes), "float32", "class logits, background last"),
                    TensorSpec("probabilities", ("B", classes), "float32", "softmax of the logits")]
    if step.memory:
        outputs += [TensorSpec(f"next_{spec.name}", spec.shape, spec.dtype,
                               f"{spec.name} after this step: the next step's {spec.name}") for spec in state]
    return inputs, outputs


def _metadata(trained: TrainedModel, fmt: str, inputs: list[TensorSpec], outputs: list[TensorSpec], mel: MelConfig,
              segment: int) -> dict[str, str]:
    """The file's metadata: string keys and values (JSON where structured), ONNX metadata_props style."""
    head = trained.head
    front_end = {**asdict(mel), "segment_samples": segment,
                 "segment": "round(sample_rate / fps) mono samples centred on the frame's time"}
    metadata = {
        "avloc.version": __version__,
        "avloc.format": fmt,
        "avloc.source": Path(trained.source).name,
        "avloc.model": trained.config.model,
        "avloc.classes": json.dumps(trained.classes),
        "avloc.fps": repr(float(trained.config.fps)),
        "avloc.frame_size": str(inputs[0].shape[-1]),
        "avloc.mel": json.dumps(front_end),
        "avloc.inputs": json.dumps([asdict(spec) for spec in inputs]),
        "avloc.outputs": json.dumps([asdict(spec) for spec in outputs]),
    }
    if isinstance(head, STM):
        metadata["avloc.memory_size"] = str(head.memory.memory_size)
        metadata["avloc.state"] = ("start a stream with every memory_* input zero; feed each next_memory_* output "
                                   "back as the next step's memory_* input; slots oldest first, newest last")
    return metadata


def _concrete(shape: tuple[int | str, ...], batch: int) -> tuple[int, ...]:
    return tuple(batch if size == "B" else size for size in shape)


def _examples(inputs: list[TensorSpec], batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Random inputs of every shape (a half-filled memory), for exporting and checking."""
    generator = torch.Generator().manual_seed(seed)
    examples = {spec.name: torch.rand(_concrete(spec.shape, batch), generator=generator) for spec in inputs}
    if "memory_mask" in examples:
        k = examples["memory_mask"].shape[1]
        examples["memory_mask"] = (torch.arange(k) >= k // 2).float().expand(batch, k).contiguous()
    return examples


def _save_onnx(step: StreamingStep, examples: dict[str, torch.Tensor], inputs: list[TensorSpec],
               outputs: list[TensorSpec], metadata: dict[str, str], path: Path) -> None:
    import onnx

    # optimize=False: onnxruntime optimises the graph when it loads it; the exporter's own pass (constant
    # folding, fusions) moved the default model's logits 2.5e-5 from PyTorch's, against 6e-6 without it.
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.onnx.export(
            step, tuple(examples.values()), input_names=[spec.name for spec in inputs],
            output_names=[spec.name for spec in outputs], opset_version=ONNX_OPSET, dynamo=True, optimize=False,
            dynamic_shapes={spec.name: {0: batch} for spec in inputs}, external_data=False, verbose=False,
        )
    except Exception as error:  # the exporter raises many types; the user needs its first line
        raise AvlocError(f"the ONNX exporter failed: {str(error).strip().splitlines()[0]}") from None
    model = program.model_proto
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _check(step: StreamingStep, fmt: str, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]
           ) -> float | None:
    """Run the written file for two steps (a state fed back) against ``step``; the largest difference."""
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
            return [torch.from_numpy(x) for x in session.run(None, {k: v.numpy() for k, v in feeds.items()})]
    else:
        loaded = torch.jit.load(str(path))

        def run(feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
            return list(loaded(*feeds.values()))

    feeds = _examples(inputs, batch=1, seed=1)
    worst = 0.0
    for _ in range(2):
        expected, got = step(*feeds.values()), run(feeds)
        worst = max([worst, *((e - g).abs().max().item() for e, g in zip(expected, got))])
        state = {spec.name.removeprefix("next_"): value for spec, value in zip(outputs, expected)
                 if spec.name.startswith("next_")}
        feeds = {**_examples(inputs, batch=1, seed=2), **state}
    if not math.isfinite(worst) or worst > CHECK_TOLERANCE:
        raise AvlocError(f"the exported {fmt} file differs from the PyTorch model by {worst:.3g} "
                         f"(more than {CHECK_TOLERANCE:g}); not written")
    return worst
