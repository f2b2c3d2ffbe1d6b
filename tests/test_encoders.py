"""Encoders: shapes, deterministic init, weights from files, torchvggish layout, offline errors.

No test touches the network: torch hub's dir points at tmp_path and its download function is
replaced by one that fails like an offline machine (or copies a local file).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

import avloc.models.encoders.audio as audio_module
from avloc.models.encoders import (
    Encoder,
    WeightsUnavailableError,
    convert_vggish_state_dict,
    create_encoder,
    default_weights,
    list_encoders,
    weights_name,
)
from avloc.models.encoders.visual import SmallVisualEncoder
from avloc.models.encoders.weights import WeightSpec
from avloc.types import AvlocError

VISUAL_KEYS = {"mean", "std", "size", "stride"}
AUDIO_KEYS = {"sample_rate", "n_mels", "window_ms", "hop_ms", "fmin", "fmax", "log_offset"}
# (out_channels, map size) for a 64 px frame / a 64 x 23 log-mel (0.25 s)
EXPECTED = {
    "resnet18": (512, (2, 2)),
    "resnet50": (2048, (2, 2)),
    "resnet152": (2048, (2, 2)),
    "vgg19": (512, (2, 2)),
    "small-visual": (128, (4, 4)),
    "vggish": (512, (4, 2)),
    "vggish-embed": (128, (1, 1)),
    "small-audio": (128, (4, 2)),
}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def torchvggish_state(seed: int = 0, embeddings: bool = True) -> dict[str, torch.Tensor]:
    """A state dict with harritaylor/torchvggish's key names and shapes (random values)."""
    gen = torch.Generator().manual_seed(seed)
    convs = {0: (64, 1), 3: (128, 64), 6: (256, 128), 8: (256, 256), 11: (512, 256), 13: (512, 512)}
    state = {}
    for index, (out_ch, in_ch) in convs.items():
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * math.sqrt(2 / (9 * in_ch))
        state[f"features.{index}.bias"] = torch.randn(out_ch, generator=gen) * 0.01
    if embeddings:
        for index, (out_f, in_f) in {0: (4096, 512 * 24), 2: (4096, 4096), 4: (128, 4096)}.items():
            state[f"embeddings.{index}.weight"] = torch.randn(out_f, in_f, generator=gen) * math.sqrt(2 / in_f)
            state[f"embeddings.{index}.bias"] = torch.zeros(out_f)
        state["pproc.pca_matrix"] = torch.eye(128)
        state["pproc.pca_means"] = torch.zeros(128, 1)
    return state


def torchvggish_reference(state: dict[str, torch.Tensor], example: torch.Tensor) -> torch.Tensor:
    """VGGish as the torchvggish port lays it out, on its (N, 1, 96 frames, 64 bins) example."""
    features = nn.Sequential()
    in_ch = 1
    for index, item in enumerate([64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]):
        if item == "M":
            features.append(nn.MaxPool2d(2, 2))
        else:
            features.append(nn.Conv2d(in_ch, item, 3, padding=1))
            features.append(nn.ReLU())
            in_ch = item
    embeddings = nn.Sequential(
        nn.Linear(512 * 24, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 128), nn.ReLU()
    )
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    embeddings.load_state_dict({k.removeprefix("embeddings."): v for k, v in state.items() if k.startswith("embeddings.")})
    x = features(example)  # (N, 512, 6, 4)
    x = x.permute(0, 2, 3, 1).flatten(1)  # (N, 512, 6, 4) -> (N, 6, 4, 512) -> (N, 12288)
    return embeddings(x)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch hub dir in tmp_path and a download function that fails like an offline machine."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    yield tmp_path / "hub" / "checkpoints", calls
    torch.hub.set_dir(previous)


def test_list_encoders():
    visual, audio = list_encoders("visual"), list_encoders("audio")
    assert set(visual) == {"resnet18", "resnet50", "resnet152", "vgg19", "small-visual"}
    assert set(audio) == {"vggish", "vggish-embed", "small-audio"}
    assert sorted(list_encoders()) == sorted(visual + audio)
    with pytest.raises(AvlocError, match="modality"):
        list_encoders("video")
    with pytest.raises(AvlocError, match="resnet18"):
        create_encoder("resnet19")


@pytest.mark.parametrize("name", list_encoders())
def test_output_shape(name):
    encoder = create_encoder(name).eval()
    channels, size = EXPECTED[name]
    assert isinstance(encoder, Encoder) and encoder.name == name
    assert encoder.out_channels == channels
    assert encoder.weights_id == "init-seed0"
    if encoder.modality == "visual":
        assert VISUAL_KEYS <= set(encoder.input_spec)
        assert encoder.input_spec["stride"] == 64 // size[0]
        x = torch.rand(2, 3, 64, 64)
    else:
        assert encoder.modality == "audio"
        assert AUDIO_KEYS <= set(encoder.input_spec)
        assert (encoder.input_spec["sample_rate"], encoder.input_spec["n_mels"]) == (16000, 64)
        x = torch.randn(2, 1, 64, 23)
    with torch.no_grad():
        y = encoder(x)
    assert y.shape == (2, channels, *size)
    assert torch.isfinite(y).all()
    assert y.abs().sum() > 0
    with pytest.raises(ValueError, match=name):
        encoder(torch.rand(2, 2, 64, 64))


@pytest.mark.parametrize(
    "name, shape, expected",
    [
        ("small-visual", (1, 3, 128, 96), (1, 128, 8, 6)),
        ("vggish", (1, 1, 64, 96), (1, 512, 4, 6)),  # VGGish's native 0.96 s example
        ("vggish", (1, 1, 64, 8), (1, 512, 4, 1)),  # the shortest input we promise
        ("vggish-embed", (1, 1, 64, 8), (1, 128, 1, 1)),
        ("small-audio", (1, 1, 64, 100), (1, 128, 4, 7)),
    ],
)
def test_other_input_sizes(name, shape, expected):
    encoder = create_encoder(name).eval()
    with torch.no_grad():
        assert encoder(torch.rand(shape)).shape == expected


@pytest.mark.parametrize("name", ["small-visual", "small-audio"])
def test_every_parameter_gets_a_gradient(name):
    encoder = create_encoder(name)
    x = torch.rand(2, 3, 32, 32) if encoder.modality == "visual" else torch.randn(2, 1, 64, 23)
    encoder(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_random_init_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = create_encoder("small-visual")
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(456)  # whatever the caller's RNG holds, the init is the same
    second = create_encoder("small-visual")
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_normalisation_happens_inside_with_imagenet_stats():
    encoder = create_encoder("resnet18").eval()
    assert encoder.input_spec["mean"] == pytest.approx((0.485, 0.456, 0.406))
    # mean colour in -> zero after normalisation: the stem sees exactly zeros.
    frames = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert encoder.normalize(frames).abs().max() < 1e-6


def test_torchvision_layout_file_changes_outputs(tmp_path):
    torch.manual_seed(1)
    classifier = torchvision.models.resnet18().eval()  # full model, fc head included
    path = tmp_path / "resnet18-mine.pth"
    torch.save(classifier.state_dict(), path)

    default = create_encoder("resnet18").eval()
    loaded = create_encoder("resnet18", weights=path).eval()
    assert loaded.weights_id == f"file:sha256={sha256(path)}" != default.weights_id
    frames = torch.rand(2, 3, 64, 64)
    trunk = nn.Sequential(*list(classifier.children())[:-2])  # drop avgpool, fc
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = trunk((frames - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
        ours, theirs = loaded(frames), default(frames)
    assert not torch.allclose(ours, theirs)
    torch.testing.assert_close(ours, expected)


def test_own_layout_file_round_trips(tmp_path):
    torch.manual_seed(7)
    other = type(create_encoder("small-audio"))().eval()  # a differently seeded init
    path = tmp_path / "small-audio.pt"
    torch.save(other.state_dict(), path)
    loaded = create_encoder("small-audio", weights=str(path)).eval()
    default = create_encoder("small-audio").eval()
    logmel = torch.randn(3, 1, 64, 23)
    with torch.no_grad():
        assert torch.equal(loaded(logmel), other(logmel))
        assert not torch.allclose(loaded(logmel), default(logmel))


def test_torchvggish_layout_loads_through_the_conversion(tmp_path):
    state = torchvggish_state(seed=3)
    converted = convert_vggish_state_dict(state)
    assert "features.13.weight" in state and "features.8.conv.weight" in converted
    assert not any(key.startswith("pproc.") for key in converted)
    path = tmp_path / "vggish-port.pth"
    torch.save(state, path)

    embed = create_encoder("vggish-embed", weights=path).eval()
    conv = create_encoder("vggish", weights=path).eval()  # the MLP keys are dropped
    assert embed.weights_id == conv.weights_id == f"file:sha256={sha256(path)}"
    example = torch.randn(2, 1, 96, 64)  # torchvggish's (frames, bins)
    logmel = example.transpose(2, 3)  # ours: (bins, frames)
    with torch.no_grad():
        expected = torchvggish_reference(state, example)
        ours = embed(logmel)
        conv_map = conv(logmel)
    assert ours.shape == (2, 128, 1, 1)
    torch.testing.assert_close(ours.flatten(1), expected)
    assert conv_map.shape == (2, 512, 4, 6)  # (bins/16, frames/16)


@pytest.mark.parametrize(
    "name, weights, file_name, modality",
    [
        ("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", "visual"),
        ("resnet50", "DEFAULT", "resnet50-11ad3fa6.pth", "visual"),
        ("vggish", "audioset", "vggish-10086976.pth", "audio"),
    ],
)
def test_offline_named_weights_fail_fast(hub_dir, name, weights, file_name, modality):
    checkpoints, calls = hub_dir
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        create_encoder(name, weights=weights)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert f'weights="/path/{file_name}"' in message
    assert f"--weights {modality}=" in message
    assert str(checkpoints) in message
    assert len(calls) == 1 and calls[0][0].endswith(file_name)
    assert calls[0][2] == file_name.split("-")[1].split(".")[0]  # the hash prefix is checked


def test_cached_file_with_wrong_hash_is_refused(hub_dir):
    checkpoints, calls = hub_dir
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), checkpoints / "resnet18-f37072fd.pth")
    with pytest.raises(WeightsUnavailableError, match="resnet18-f37072fd.pth"):
        create_encoder("resnet18", weights="IMAGENET1K_V1")
    assert calls == []  # the cache was consulted, no download tried


def test_named_weights_download_then_cache(hub_dir, tmp_path, monkeypatch):
    checkpoints, _ = hub_dir
    source = tmp_path / "port.pth"
    torch.save(torchvggish_state(seed=5, embeddings=False), source)
    digest = sha256(source)
    url = f"https://example.invalid/vggish-{digest[:8]}.pth"
    monkeypatch.setattr(audio_module, "VGGISH_AUDIOSET", WeightSpec(name="audioset", url=url))
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append(hash_prefix)
        shutil.copyfile(source, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = create_encoder("vggish", weights="audioset")
    second = create_encoder("vggish", weights="audioset")  # from the cache
    assert downloads == [digest[:8]]
    assert (checkpoints / f"vggish-{digest[:8]}.pth").is_file()
    assert first.weights_id == second.weights_id == f"audioset:sha256={digest}"
    assert first.weights_id != create_encoder("vggish", weights=source).weights_id
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_named_weights_carry_their_input_spec():
    encoder = create_encoder("resnet50")
    spec = encoder.named_weights("DEFAULT")
    assert spec.name == "IMAGENET1K_V2" and spec.file_name == "resnet50-11ad3fa6.pth"
    assert spec.sha256_prefix == "11ad3fa6"
    assert spec.input_spec["size"] == 224 and len(spec.input_spec["std"]) == 3
    assert encoder.named_weights("IMAGENET22K") is None
    assert "IMAGENET1K_V1" in encoder.available_weights()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(AvlocError, match="nope.pth") as info:
        create_encoder("resnet18", weights=path)
    assert "IMAGENET1K_V1" in str(info.value)  # the named sets are listed
    with pytest.raises(AvlocError, match="no named weights"):
        create_encoder("small-audio", weights="IMAGENET1K_V1")
    with pytest.raises(AvlocError, match="named weights: stamps"):
        create_encoder("small-visual", weights="IMAGENET1K_V1")


def test_bundled_weights_ship_with_the_package_and_are_the_default():
    encoder = create_encoder("small-visual", "stamps").eval()
    spec = encoder.named_weights("stamps")
    assert spec.bundled.is_file() and sha256(spec.bundled).startswith(spec.sha256_prefix)
    assert encoder.weights_id == f"stamps:sha256={sha256(spec.bundled)}"
    random_init = create_encoder("small-visual", "random").eval()
    assert random_init.weights_id == "init-seed0"
    frames = torch.rand(1, 3, 64, 64)
    assert not torch.allclose(encoder(frames), random_init(frames))
    assert default_weights("small-visual") == "stamps"
    assert default_weights("small-audio") is None and default_weights("resnet18") is None
    with pytest.raises(AvlocError, match="unknown encoder"):
        default_weights("resnet19")


def test_bundled_weights_missing_from_the_package_are_refused(monkeypatch):
    spec = WeightSpec("stamps", "package:avloc/models/default/small-visual-stamps-00000000.pt")
    monkeypatch.setattr(SmallVisualEncoder, "named_weights", lambda self, name: spec)
    with pytest.raises(AvlocError, match="small-visual-stamps-00000000.pt.*missing from the installed package"):
        create_encoder("small-visual", "stamps")


def test_weights_name_reads_the_set_out_of_a_weights_id():
    assert weights_name("stamps:sha256=ab12") == "stamps"
    assert weights_name("IMAGENET1K_V1:sha256=ab12") == "IMAGENET1K_V1"
    assert weights_name("init-seed0") == "random"
    assert weights_name("file:sha256=ab12") is None


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x00not a zip or pickle" * 10)
    with pytest.raises(AvlocError, match="corrupt.pth"):
        create_encoder("small-visual", weights=path)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(AvlocError, match="tensor.pt.*state dict"):
        create_encoder("small-visual", weights=tensor)


def test_wrong_shapes_and_keys(tmp_path):
    state = create_encoder("small-visual").state_dict()
    state["features.0.conv.weight"] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / "bad-shapes.pth"
    torch.save(state, path)
    with pytest.raises(AvlocError, match=r"bad-shapes.pth.*wrong shapes: features.0.conv.weight"):
        create_encoder("small-visual", weights=path)

    other = tmp_path / "resnet18-into-resnet50.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    with pytest.raises(AvlocError, match=r"resnet18-into-resnet50.pth.*(missing keys|wrong shapes)"):
        create_encoder("resnet50", weights=other)
