"""The GPU path checked on the CPU: --precision, autocast, channels-last, loaders, and no collectives in a group of one.

No GPU is needed: bf16 autocast runs on the CPU, so the reduced-precision arithmetic the GPU
path uses by default is compared with float32 here, and the CUDA policy is checked with
``torch.cuda`` faked. Tolerances (relative, measured on this machine with the default
encoders and model, then given a margin of about 4x):

- bf16 features: relative L2 error <= 2e-2 (measured 3e-3 .. 6e-3 for small-visual /
  small-audio; bf16 keeps 8 bits of mantissa, 4e-3 per rounding).
- bf16 training loss: within 5e-3 relative of float32's (measured 2e-6 .. 4e-4 over 3 seeds x 2
  batches of a 32-channel STM on the tiny cache).
- bf16 heat maps (the default model on two demo clips, 12 steps each): largest difference
  <= 5e-2 of the map's peak (measured 1.1e-2 at most, 7e-3 on average); the cell bf16 puts
  the peak on is rated by fp32 within 2e-2 of fp32's peak (measured 4e-3: the maps are flat at
  the top, so bf16 picks another cell than fp32 in 2 to 7 steps of 12, always a near-tie);
  class probabilities within 2e-2 (measured 4.2e-3).
- channels-last: largest difference <= 1e-5 of the output's largest value (measured 1e-6 ..
  2.5e-6: the same sums in another order).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from tiny_features import train_args, write_feature_dataset
from torch.utils.data import DataLoader

import avloc.accelerate as accelerate
import avloc.distributed as distributed
from avloc.accelerate import PRECISION_CHOICES, acceleration, use_channels_last
from avloc.cli import build_parser, main
from avloc.config import TrainConfig, build_model
from avloc.data.cache import FeatureCache, encode_clip
from avloc.data.manifest import load_manifest
from avloc.data.windows import FeatureWindows
from avloc.extract import extract_features
from avloc.io.decode import iter_steps
from avloc.localizer import Localizer
from avloc.models.encoders import create_encoder, default_weights
from avloc.trained import load_trained
from avloc.train import train_one_epoch
from avloc.types import AvlocError

DEMO = Path(__file__).resolve().parents[1] / "src" / "avloc" / "models" / "default" / "demo" / "videos"
FEATURE_TOLERANCE = 2e-2  # relative L2 error of bf16 feature maps
LOSS_TOLERANCE = 5e-3  # relative error of a bf16 training loss
MAP_TOLERANCE = 5e-2  # largest bf16 heat-map difference, relative to the map's peak
PEAK_TOLERANCE = 2e-2  # fp32's value at bf16's peak cell, below fp32's peak, relative
PROBABILITY_TOLERANCE = 2e-2  # largest bf16 class-probability difference
LAYOUT_TOLERANCE = 1e-5  # channels-last, relative to the output's largest value


def _relative(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).norm() / b.norm())


# --- the policy -------------------------------------------------------------------------------------------------


def test_auto_on_the_cpu_is_todays_float32_path():
    accel = acceleration("cpu")
    assert (accel.precision, accel.dtype, accel.channels_last, accel.pin_memory, accel.workers) == (
        "fp32", None, False, False, 0)
    with accel.autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not accel.grad_scaler().is_enabled()


def test_an_explicit_precision_forces_autocast_on_the_cpu():
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        accel = acceleration("cpu", name)
        with accel.autocast():
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype
        assert accel.grad_scaler().is_enabled() == (name == "fp16")  # bf16 has float32's range: no scaler
    assert acceleration("cpu", "fp32").dtype is None


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_on_cuda_auto_picks_reduced_precision_pinned_memory_and_workers(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(accelerate, "_cpu_count", lambda: 16)
    accel = acceleration(torch.device("cuda"))
    assert (accel.precision, accel.channels_last, accel.pin_memory, accel.workers) == (expected, True, True, 4)
    monkeypatch.setattr(accelerate, "_cpu_count", lambda: 2)
    assert acceleration("cuda").workers == 2  # never more processes than cores
    assert acceleration("cuda", workers=0).workers == 0  # a number given wins
    assert acceleration("cuda", "fp32").dtype is None and acceleration("cuda", "fp32").pin_memory


def test_bf16_on_a_gpu_without_it_and_unknown_precisions_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(AvlocError, match="--precision bf16: this GPU has no bfloat16"):
        acceleration("cuda", "bf16")
    with pytest.raises(AvlocError, match="unknown precision 'fp8'"):
        acceleration("cpu", "fp8")


@pytest.mark.parametrize("command", [["extract", "D", "--out", "f.h5"], ["train", "D"], ["localize", "v.mp4"]])
def test_the_flag_on_extract_train_and_localize(command, capsys):
    from avloc import cli

    assert cli.PRECISION_CHOICES == PRECISION_CHOICES  # spelled out in cli.py so that --help imports no torch
    parser = build_parser()
    assert parser.parse_args(command).precision == "auto"
    for name in PRECISION_CHOICES:
        assert parser.parse_args([*command, "--precision", name]).precision == name
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_log_mel_stays_float32_under_autocast():
    from avloc.audio import log_mel

    segments = torch.randn(2, 4000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = log_mel(segments)
    assert inside.dtype == torch.float32 and torch.equal(inside, log_mel(segments))


# --- channels-last ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small-visual", "small-audio", "resnet18", "vggish"])
def test_channels_last_encoders_give_the_same_maps(name, one_thread):
    torch.manual_seed(0)
    encoder = create_encoder(name, weights=default_weights(name)).eval()
    inputs = torch.rand(2, 3, 128, 128) if encoder.modality == "visual" else torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        expected = encoder(inputs)
        use_channels_last(use_channels_last(encoder))  # twice is once
        assert len(encoder._forward_hooks) == 1 and len(encoder._forward_pre_hooks) == 1
        got = encoder(inputs)
    assert any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in encoder.parameters())
    assert got.is_contiguous()  # callers reshape it as before
    assert float((got - expected).abs().max()) <= LAYOUT_TOLERANCE * float(expected.abs().max())


# --- extract ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory) -> Path:
    """Two clips of the bundled demo (real cut-outs over backgrounds, with sound), 2 s each."""
    root = tmp_path_factory.mktemp("demo")
    (root / "videos").mkdir()
    lines = []
    for index, name in enumerate(["clip_00013", "clip_00048"]):
        shutil.copy(DEMO / f"{name}.mp4", root / "videos" / f"{name}.mp4")
        lines.append(f'{{"id": "{name}", "video": "videos/{name}.mp4", "split": "{("train", "test")[index]}", '
                     f'"label": "x"}}\n')
    (root / "manifest.jsonl").write_text("".join(lines))
    return root


def _extract(dataset: Path, out: Path, **options) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    extract_features(dataset, out, fps=4.0, size=128, progress=False, storage="float32", **options)  # exact maps
    cache = FeatureCache(out)
    return {clip: (cache.read(clip).visual, cache.read(clip).audio) for clip in cache.ids}


def test_extract_auto_is_bit_identical_to_plain_encoding_and_bf16_is_close(demo_dataset, tmp_path, one_thread):
    auto = _extract(demo_dataset, tmp_path / "auto.h5")
    bf16 = _extract(demo_dataset, tmp_path / "bf16.h5", precision="bf16")
    # Today's path, written out: the encoders called as they were, no autocast, no layout change.
    visual = create_encoder("small-visual", weights=default_weights("small-visual")).eval()
    audio = create_encoder("small-audio", weights=default_weights("small-audio")).eval()
    for record in load_manifest(demo_dataset).records:
        steps = iter_steps(record.video, fps=4.0, size=128, sample_rate=audio.mel.sample_rate, audio_window=0.25)
        plain = encode_clip(steps, visual, audio, audio.mel, 16, "cpu")
        assert np.array_equal(auto[record.id][0], plain.visual) and np.array_equal(auto[record.id][1], plain.audio)
        for got, expected in zip(bf16[record.id], auto[record.id]):
            assert got.dtype == np.float32 and got.shape == expected.shape
            assert 0 < _relative(got, expected) <= FEATURE_TOLERANCE  # > 0: autocast did run


# --- train ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_feature_dataset(tmp_path_factory.mktemp("accel"), clips=12)


def _setup(tiny, seed: int = 0):
    data, features = tiny
    config = TrainConfig(dataset=str(data), features=str(features), size=64, model_options={"channels": 32},
                         batch_size=4)
    dataset = load_manifest(data)
    torch.manual_seed(seed)
    model = build_model(config, list(dataset.classes), with_encoders=False)
    windows = FeatureWindows(FeatureCache(features), dataset.split("train"), dataset.classes, steps=4, augment=False)
    loader = DataLoader(windows, batch_size=4, shuffle=False)
    return model, loader, torch.optim.Adam(model.parameters(), lr=1e-3)


def test_a_training_epoch_with_auto_on_the_cpu_is_todays_loop_bit_for_bit(tiny, one_thread):
    model, loader, optimizer = _setup(tiny)
    loss, steps = train_one_epoch(model, loader, optimizer, "video", torch.device("cpu"), progress=False,
                                  accel=acceleration("cpu"), scaler=acceleration("cpu").grad_scaler())
    reference, ref_loader, ref_optimizer = _setup(tiny)
    reference.train()
    losses = []
    for batch in ref_loader:  # the loop before avloc.accelerate: forward, loss, backward, step
        step_loss = reference.loss(reference(visual=batch["visual"], audio=batch["audio"]), batch, "video")
        ref_optimizer.zero_grad(set_to_none=True)
        step_loss.backward()
        ref_optimizer.step()
        losses.append(step_loss.item())
    assert steps == len(losses) and loss == pytest.approx(np.mean(losses), rel=1e-12)
    for mine, theirs in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(mine, theirs)


def test_a_bf16_training_step_has_the_fp32_loss_within_tolerance(tiny, one_thread):
    model, loader, _ = _setup(tiny)
    model.train()
    batch = next(iter(loader))
    torch.manual_seed(1)  # the same dropout masks in both passes
    fp32 = model.loss(model(visual=batch["visual"], audio=batch["audio"]), batch, "video")
    torch.manual_seed(1)
    with acceleration("cpu", "bf16").autocast():
        bf16 = model.loss(model(visual=batch["visual"], audio=batch["audio"]), batch, "video")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16)
    assert 0 < abs(bf16.item() - fp32.item()) <= LOSS_TOLERANCE * abs(fp32.item())
    bf16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_in_reduced_precision_checkpoints_and_resumes(tiny, tmp_path, precision, one_thread):
    data, features = tiny
    out = tmp_path / "run"
    assert main(train_args(data, features, out, "--epochs", "1", "--batch-size", "4", "--precision", precision)) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert ("grad_scaler" in state) == (precision == "fp16")  # fp16's loss scale travels with --resume
    assert main(train_args(data, features, out, "--epochs", "2", "--batch-size", "4", "--precision", precision,
                           "--resume")) == 0
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and all(np.isfinite(float(v)) for v in rows[2].split(",")[2:4])


def test_a_model_with_channels_last_encoders_trains_like_a_contiguous_one(one_thread):
    config = TrainConfig(dataset="unused", model_options={"channels": 32}, size=64, visual="small-visual",
                         audio="small-audio", fps=4.0, train_visual=True)
    batch = {"frames": torch.rand(2, 2, 3, 64, 64), "logmel": torch.randn(2, 2, 1, 64, 23),
             "label": torch.tensor([0, 1])}
    outputs = []
    for layout in (False, True):
        torch.manual_seed(0)
        model = build_model(config, ["a", "b"], with_encoders=True).train()
        acceleration("cpu", channels_last=layout).prepare(model.visual_encoder, model.audio_encoder)
        torch.manual_seed(1)
        loss = model.loss(model(frames=batch["frames"], logmel=batch["logmel"]), batch, "video")
        loss.backward()
        grads = [p.grad.flatten() for p in model.visual_encoder.parameters() if p.grad is not None]  # logical order
        outputs.append((loss.detach(), torch.cat(grads)))
    (loss, grad), (cl_loss, cl_grad) = outputs
    assert float((cl_loss - loss).abs()) <= LAYOUT_TOLERANCE * float(loss.abs())
    assert float((cl_grad - grad).abs().max()) <= LAYOUT_TOLERANCE * float(grad.abs().max())


# --- localize ---------------------------------------------------------------------------------------------------


def _heat_maps(localizer: Localizer, video: Path, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    frames, segments = [], []
    for step in iter_steps(video, fps=localizer.fps, size=localizer.frame_size, sample_rate=localizer.mel.sample_rate):
        frames.append(step.frame)
        segments.append(step.segment)
        if len(frames) == steps:
            break
    localizer.reset()
    visual, audio = localizer.encode(torch.stack(frames), torch.stack(segments))
    maps, probabilities = localizer.advance(visual, audio)
    return maps, probabilities


@pytest.fixture(scope="module")
def default_model():
    return load_trained("default")


def test_localizer_auto_on_the_cpu_is_bit_identical_to_the_plain_model(default_model, one_thread):
    localizer = Localizer(default_model, "cpu")
    assert localizer.accel.precision == "fp32" and not localizer.accel.channels_last
    maps, probabilities = _heat_maps(localizer, DEMO / "clip_00013.mp4")
    frames, segments = [], []
    for step in iter_steps(DEMO / "clip_00013.mp4", fps=localizer.fps, size=localizer.frame_size,
                           sample_rate=localizer.mel.sample_rate):
        frames.append(step.frame)
        segments.append(step.segment)
    from avloc.audio import log_mel

    with torch.no_grad():  # the calls as they were before avloc.accelerate
        visual = localizer.visual_encoder(torch.stack(frames[:12]))
        audio = localizer.audio_encoder(log_mel(torch.stack(segments[:12]), localizer.mel))
        output, _ = localizer.head.stream(visual[None], audio[None], localizer.head.init_state())
    assert torch.equal(maps, output.heatmap[0]) and torch.equal(probabilities, output.logits[0].softmax(-1))


@pytest.mark.parametrize("clip", ["clip_00013", "clip_00048"])
def test_localizer_bf16_heat_maps_are_close_to_fp32(default_model, clip, one_thread):
    fp32, fp32_probabilities = _heat_maps(Localizer(default_model, "cpu", precision="fp32"), DEMO / f"{clip}.mp4")
    bf16_localizer = Localizer(default_model, "cpu", precision="bf16")
    bf16, bf16_probabilities = _heat_maps(bf16_localizer, DEMO / f"{clip}.mp4")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    peak = fp32.flatten(1).amax(1)  # (T, h, w) -> (T,)
    error = (bf16 - fp32).abs().flatten(1).amax(1) / peak
    assert 0 < float(error.max()) <= MAP_TOLERANCE, error
    # The maps are flat near their top (cells within 0.5 % of the peak), so bf16 may pick a neighbour of
    # fp32's peak cell: fp32 must rate the cell bf16 picks within PEAK_TOLERANCE of its own peak.
    at_bf16_peak = fp32.flatten(1).gather(1, bf16.flatten(1).argmax(1, keepdim=True))[:, 0]  # (T,)
    assert float((at_bf16_peak / peak).min()) >= 1 - PEAK_TOLERANCE
    assert float((bf16_probabilities - fp32_probabilities).abs().max()) <= PROBABILITY_TOLERANCE


def test_channels_last_localizer_gives_the_same_heat_maps(default_model, one_thread):
    plain = Localizer(default_model, "cpu")
    maps, _ = _heat_maps(plain, DEMO / "clip_00048.mp4")
    layout = Localizer(load_trained("default"), "cpu")
    layout.accel = acceleration("cpu", channels_last=True)
    layout.accel.prepare(layout.visual_encoder, layout.audio_encoder)
    got, _ = _heat_maps(layout, DEMO / "clip_00048.mp4")
    assert float((got - maps).abs().max()) <= LAYOUT_TOLERANCE * float(maps.abs().max())


# --- a group of one makes no collective calls ------------------------------------------------------------------


def test_a_world_of_one_makes_no_collective_calls(tiny, tmp_path, monkeypatch, one_thread):
    """``torchrun --nproc-per-node 1``: a real gloo group of one; training must not all-reduce, barrier or wrap."""
    calls = []
    for name in ("all_reduce", "barrier", "broadcast"):
        real = getattr(dist, name)
        monkeypatch.setattr(dist, name, lambda *a, _name=name, _real=real, **k: (calls.append(_name), _real(*a, **k))[1])

    class CountedDDP(distributed.DistributedDataParallel):
        def __init__(self, *args, **kwargs):
            calls.append("DistributedDataParallel")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(distributed, "DistributedDataParallel", CountedDDP)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(probe.getsockname()[1]))
    seen = {}
    real_fit = __import__("avloc.train", fromlist=["_fit"])._fit

    def spy_fit(*args, **kwargs):
        seen["group"] = (distributed.is_distributed(), distributed.world_size())
        dist.all_reduce(torch.zeros(1))  # the spy works: a direct collective is counted
        return real_fit(*args, **kwargs)

    monkeypatch.setattr("avloc.train._fit", spy_fit)
    data, features = tiny
    assert main(train_args(data, features, tmp_path / "run", "--epochs", "2", "--batch-size", "4")) == 0
    assert seen["group"] == (True, 1)  # a real process group of one was joined
    assert calls == ["all_reduce"]  # the spy's own call only: none from training, validation or checkpoints
    assert not dist.is_initialized()
