"""`avloc export`: the exported step (ONNX in onnxruntime, TorchScript) against PyTorch's stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avloc.audio import log_mel
from avloc.checkpoint import load_checkpoint, save_checkpoint
from avloc.cli import main
from avloc.config import TrainConfig, build_model
from avloc.export import EXTRA_FILE, STATE_NAMES, export_model
from avloc.io.decode import read_clip
from avloc.trained import DEFAULT_MODEL, load_trained
from avloc.types import AvlocError

STEPS = 8  # more than the default model's K = 3: the memory's slots wrap around
DEMO_VIDEO = DEFAULT_MODEL.parent / "demo" / "videos" / "clip_00005.mp4"


@pytest.fixture(scope="module")
def clip():
    """The first STEPS steps of a bundled demo clip: frames (T, 3, 256, 256), log-mel (T, 1, 64, 23)."""
    trained = load_trained("default")
    mel = trained.encoders(torch.device("cpu"))[2]
    decoded = read_clip(DEMO_VIDEO, fps=trained.config.fps, size=trained.config.size, sample_rate=mel.sample_rate)
    assert decoded.frames.shape[0] >= STEPS
    return decoded.frames[:STEPS], log_mel(decoded.segments[:STEPS], mel)


def pytorch_stream(source, frames: torch.Tensor, logmels: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """(heatmap (h, w), logits (N,)) of every step, by the model's own stream() from an empty state."""
    trained = load_trained(source)
    visual_encoder, audio_encoder, _ = trained.encoders(torch.device("cpu"))
    state, results = trained.head.init_state(), []
    with torch.no_grad():
        for frame, logmel in zip(frames, logmels):
            visual, audio = visual_encoder(frame[None]), audio_encoder(logmel[None])  # one step: (1, C, h, w)
            output, state = trained.head.stream(visual[:, None], audio[:, None], state)  # a stream of one step
            logits = None if output.logits is None else output.logits[0, 0]
            results.append((output.heatmap[0, 0], logits))
    return results


def run_exported(run, inputs, frames: torch.Tensor, logmels: torch.Tensor, restart: dict[int, int] | None = None
                 ) -> list[list[np.ndarray]]:
    """Every step of the exported graph, its state fed back: ``run(feeds) -> outputs``; frames
    ``(T, B, 3, H, W)``, log-mel ``(T, B, 1, M, F)``; ``restart`` {step: stream}: that stream of the
    batch starts anew at that step (its state zeroed)."""
    batch = frames.shape[1]
    state = {spec["name"]: np.zeros([batch if s == "B" else s for s in spec["shape"]], np.float32)
             for spec in inputs if spec["name"] in STATE_NAMES}
    results = []
    for step, (frame, logmel) in enumerate(zip(frames, logmels)):
        if restart and step in restart:
            for value in state.values():
                value[restart[step]] = 0.0
        outputs = run({"frame": frame.numpy(), "logmel": logmel.numpy(), **state})
        state = {name: value for name, value in zip(STATE_NAMES, outputs[-len(state):])} if state else {}
        results.append(outputs)
    return results


def assert_matches(exported: list[list[np.ndarray]], expected: list[tuple[torch.Tensor, ...]], index: int = 0):
    worst = 0.0
    for got, (heatmap, logits) in zip(exported, expected, strict=True):
        worst = max(worst, np.abs(got[0][index] - heatmap.numpy()).max())
        if logits is not None:
            worst = max(worst, np.abs(got[1][index] - logits.numpy()).max(),
                        np.abs(got[2][index] - logits.softmax(-1).numpy()).max())
    assert worst <= 1e-4, worst
    return worst


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    return export_model("default", "onnx", tmp_path_factory.mktemp("onnx") / "stm.onnx")


def test_onnx_step_matches_the_pytorch_stream_in_onnxruntime(onnx_export, clip):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    frames, logmels = clip
    session = onnxruntime.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    metadata = {p.key: p.value for p in onnx.load(str(onnx_export.path)).metadata_props}
    inputs = json.loads(metadata["avloc.inputs"])
    # The documented names and shapes are the graph's, B free.
    assert [(i.name, i.shape[1:], i.type) for i in session.get_inputs()] == \
        [(s["name"], s["shape"][1:], "tensor(float)") for s in inputs]
    assert [o.name for o in session.get_outputs()] == [s["name"] for s in json.loads(metadata["avloc.outputs"])]
    assert [s["name"] for s in inputs] == ["frame", "logmel", *STATE_NAMES]
    assert metadata["avloc.memory_size"] == "3" and json.loads(metadata["avloc.classes"])[-1] == "background"
    assert json.loads(metadata["avloc.mel"])["segment_samples"] == 4000
    # Two streams in one batch: the clip forwards and backwards, each matched to its own PyTorch stream.
    both = [(frames, logmels), (frames.flip(0), logmels.flip(0))]
    exported = run_exported(lambda feeds: session.run(None, feeds), inputs,
                            torch.stack([both[0][0], both[1][0]], 1), torch.stack([both[0][1], both[1][1]], 1))
    for index, (f, m) in enumerate(both):
        assert_matches(exported, pytorch_stream("default", f, m), index)
    assert exported[-1][-1].tolist() == [[1.0, 1.0, 1.0]] * 2  # every slot filled after more than K steps
    # Each stream has its own mask: the second starts anew at step 5 while the first goes on.
    exported = run_exported(lambda feeds: session.run(None, feeds), inputs, torch.stack([frames, frames], 1),
                            torch.stack([logmels, logmels], 1), restart={5: 1})
    assert_matches(exported, pytorch_stream("default", frames, logmels), 0)
    assert_matches(exported[5:], pytorch_stream("default", frames[5:], logmels[5:]), 1)
    assert exported[5][-1].tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]]


def test_torchscript_step_matches_the_pytorch_stream_through_the_cli(tmp_path, clip, capsys):
    out = tmp_path / "stm.pt"
    assert main(["export", "default", "--format", "torchscript", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (torchscript)" in printed and "next_memory_mask (B, 3) float32" in printed
    extra = {EXTRA_FILE: ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    metadata = json.loads(extra[EXTRA_FILE])
    assert metadata["avloc.model"] == "stm" and metadata["avloc.format"] == "torchscript"
    frames, logmels = clip

    def run(feeds):
        with torch.no_grad():
            return [x.numpy() for x in loaded(*(torch.from_numpy(v) for v in feeds.values()))]

    exported = run_exported(run, json.loads(metadata["avloc.inputs"]), frames[:, None], logmels[:, None])
    assert_matches(exported, pytorch_stream("default", frames, logmels))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stm.pt"]  # no temporary file left


def _edited_default(path: Path, **options) -> Path:
    """The default checkpoint with other STM options; weights of modules the options drop are dropped."""
    state = load_checkpoint(DEFAULT_MODEL)
    state["config"]["model_options"] = options
    if options.get("variant") in ("u", "none"):
        dropped = ("memory.audio_visual_memory.",) + (
            ("memory.audio_memory.", "memory.visual_memory.") if options["variant"] == "none" else ())
        state["model"] = {k: v for k, v in state["model"].items() if not k.startswith(dropped)}
    save_checkpoint(path, state)
    return path


@pytest.mark.parametrize("options", [{"variant": "u", "memory_size": 2}, {"variant": "none"}])
def test_other_stm_variants_export_with_the_same_state(tmp_path, clip, options):
    source = _edited_default(tmp_path / "edited.pt", **options)
    result = export_model(source, "torchscript", tmp_path / "edited.ts")
    assert [s.name for s in result.inputs] == ["frame", "logmel", *STATE_NAMES]
    loaded = torch.jit.load(str(result.path))
    frames, logmels = clip

    def run(feeds):
        with torch.no_grad():
            return [x.numpy() for x in loaded(*(torch.from_numpy(v) for v in feeds.values()))]

    specs = [{"name": s.name, "shape": s.shape} for s in result.inputs]
    exported = run_exported(run, specs, frames[:5, None], logmels[:5, None])
    assert_matches(exported, pytorch_stream(source, frames[:5], logmels[:5]))


def test_a_stepwise_model_exports_without_a_state(tmp_path, clip):
    state = load_checkpoint(DEFAULT_MODEL)
    state["config"]["model"], state["config"]["model_options"] = "ezvsl", {}
    head = build_model(TrainConfig.from_dict(state["config"]), state["classes"], with_encoders=False)
    encoders = {k: v for k, v in state["model"].items() if k.startswith(("visual_encoder.", "audio_encoder."))}
    state["model"] = {**encoders, **head.state_dict()}
    source = tmp_path / "ezvsl.pt"
    save_checkpoint(source, state)
    result = export_model(source, "torchscript", tmp_path / "ezvsl.ts")
    assert [s.name for s in result.inputs] == ["frame", "logmel"]
    assert [s.name for s in result.outputs] == ["heatmap"]  # self-supervised: no classifier
    loaded = torch.jit.load(str(result.path))
    frames, logmels = clip
    with torch.no_grad():
        exported = [[loaded(f[None], m[None])[0].numpy()] for f, m in zip(frames[:3], logmels[:3])]
    assert_matches(exported, pytorch_stream(source, frames[:3], logmels[:3]))


def test_bad_exports_give_one_line_errors_and_write_nothing(tmp_path, capsys):
    state = load_checkpoint(DEFAULT_MODEL)
    state["config"]["model_options"] = {"causal": False}
    symmetric = tmp_path / "symmetric.pt"
    save_checkpoint(symmetric, state)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    (tmp_path / "folder").mkdir()
    cases = [(["default", "--format", "tflite"], tmp_path / "x.onnx", "unknown export format 'tflite'"),
             ([str(symmetric), "--format", "onnx"], tmp_path / "y.onnx",
              "model stm cannot be exported as a stream: its memory reads future steps"),
             (["default", "--format", "torchscript"], blocker / "z.pt", "cannot write it"),
             (["default", "--format", "torchscript"], tmp_path / "folder", "is a folder"),
             ([str(tmp_path / "missing.pt")], tmp_path / "w.onnx", "no such checkpoint")]
    for argv, out, reason in cases:
        assert main(["export", *argv, "--out", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("avloc: error: ") and reason in error and error.count("\n") == 1, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "folder", "symmetric.pt"]
    assert not any((tmp_path / "folder").iterdir())


def test_a_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import avloc.export

    out = tmp_path / "stm.pt"
    out.write_bytes(b"the previous export")

    def fails(*args, **kwargs):
        raise AvlocError("the exported torchscript file differs from the PyTorch model")

    monkeypatch.setattr(avloc.export, "_check", fails)  # after the file is written in full, before it is renamed
    with pytest.raises(AvlocError, match="differs"):
        export_model("default", "torchscript", out)
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stm.pt"]
