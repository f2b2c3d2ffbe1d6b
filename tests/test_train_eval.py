"""Train, resume and evaluate end to end on a tiny synthetic benchmark (features cached)."""

import json

import pytest
import torch

from avloc.checkpoint import load_checkpoint, save_checkpoint
from avloc.cli import main
from avloc.data.manifest import load_manifest
from avloc.data.synth import generate_dataset
from avloc.evaluate import SCENARIO_ROWS, Protocol, evaluate
from avloc.extract import extract_features
from avloc.train import TrainConfig, fit
from avloc.types import AvlocError


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    dataset = generate_dataset(root / "data", clips=20, seed=1, size=64, seconds=2.0, workers=1, progress=False)
    features = root / "features.h5"
    extract_features(dataset, features, size=64, progress=False)
    return dataset, features


def _config(bench, out, **overrides):
    dataset, features = bench
    values = dict(dataset=str(dataset), features=str(features), out=str(out), size=64, epochs=2, batch_size=8,
                  lr=1e-3, model_options={"variant": "c+u", "channels": 32})
    values.update(overrides)
    return TrainConfig(**values)


def test_fit_writes_checkpoints_log_and_curve(bench, tmp_path):
    best = fit(_config(bench, tmp_path / "run"), progress=False)
    run = best.parent
    assert {p.name for p in run.iterdir()} >= {"best.pt", "last.pt", "log.csv", "loss.png"}
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and state["step"] > 0 and state["avloc_version"]
    assert state["classes"][-1] == "background" and state["config"]["lr"] == 1e-3
    assert len((run / "log.csv").read_text().splitlines()) == 3
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_where_the_run_stopped(bench, tmp_path):
    out = tmp_path / "run"
    fit(_config(bench, out, epochs=1), progress=False)
    with pytest.raises(AvlocError, match="--resume"):
        fit(_config(bench, out, epochs=2), progress=False)
    fit(_config(bench, out, epochs=2), resume=True, progress=False)
    resumed = load_checkpoint(out / "last.pt")
    straight = load_checkpoint(fit(_config(bench, tmp_path / "straight"), progress=False).with_name("last.pt"))
    assert resumed["epoch"] == 2 and resumed["step"] == straight["step"]
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, msg=key)
    assert len((out / "log.csv").read_text().splitlines()) == 3
    with pytest.raises(AvlocError, match="other settings \\(lr\\)"):
        fit(_config(bench, out, epochs=3, lr=1e-2), resume=True, progress=False)


def test_eval_from_the_cache_and_from_the_videos_agree(bench, tmp_path):
    """The table's numbers are checked by hand in test_eval_known.py; here: rows add up, and the same
    encoders give the same report whether the features come from the cache or from decoding."""
    dataset, features = bench
    best = fit(_config(bench, tmp_path / "run", epochs=1), progress=False)
    report = evaluate(best, dataset, split="test", features=str(features), protocol=Protocol(size=64), progress=False)
    rows = report["rows"]
    assert set(rows) <= set(SCENARIO_ROWS) and "all" in rows
    assert rows["all"]["n_frames"] == sum(r["n_frames"] for k, r in rows.items() if k != "all")
    assert rows["all"]["n_annotated"] == rows["all"]["n_frames"] and report["warnings"] == []
    assert report["n_segments"] * 4 == report["n_steps"]  # 2-s clips at 4 fps: 4 steps per 1-s segment
    from_video = evaluate(best, dataset, split="test", protocol=Protocol(size=64), progress=False)
    for name, row in rows.items():
        for key, value in row.items():
            assert from_video["rows"][name][key] == pytest.approx(value, abs=1e-6), (name, key)


def test_cli_train_eval_and_baselines(bench, tmp_path, capsys):
    dataset, features = bench
    out = tmp_path / "run"
    assert main(["train", str(dataset), "--features", str(features), "--size", "64", "--epochs", "1",
                 "--batch-size", "8", "--out", str(out), "-q"]) == 0
    assert main(["eval", str(out / "best.pt"), str(dataset), "--features", str(features), "--size", "64",
                 "--out", str(tmp_path / "r.json"), "-q"]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "r.json").read_text())
    all_row = next(line for line in printed.splitlines() if line.startswith("all "))
    assert all_row.split()[1:4] == [str(written["rows"]["all"]["n_annotated"]), str(written["rows"]["all"]["n_frames"]),
                                    f"{written['rows']['all']['ciou_at']:.3f}"]
    assert "protocol: stm:" in printed and "64x64" in printed and written["split"] == "test"
    for protocol in ("lvs", "ezvsl", "avatar"):
        assert main(["eval", str(out / "best.pt"), str(dataset), "--features", str(features), "--protocol", protocol,
                     "--out", str(tmp_path / f"{protocol}.json"), "-q"]) == 0
        assert f"protocol: {protocol}:" in capsys.readouterr().out
    assert main(["eval", str(out / "best.pt"), str(dataset), "--features", str(features), "--protocol", "lvs",
                 "--size", "256", "-q"]) == 2
    assert "defined at 224 px" in capsys.readouterr().err
    assert main(["eval", str(out / "best.pt"), str(dataset), "--features", str(features), "--otsu-floor", "x"]) == 2
    assert "--otsu-floor expects a number" in capsys.readouterr().err
    assert main(["models"]) == 0 and "stm" in capsys.readouterr().out


def test_bad_checkpoints_are_refused_with_one_line(bench, tmp_path, capsys):
    dataset, _ = bench
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "avloc-checkpoint", "x": Evil()}, evil)
    for path, reason in [(corrupt, "not a readable checkpoint"), (foreign, "not an avloc checkpoint"),
                         (evil, "refused to load"), (tmp_path / "missing.pt", "no such checkpoint")]:
        assert main(["eval", str(path), str(dataset), "-q"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("avloc: error: ") and reason in error and error.count("\n") == 1
        assert "pwned" not in error


def test_checkpoint_round_trip_is_atomic(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 4})
    assert load_checkpoint(path)["step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize(("model", "supervision", "options"), [
    ("avdln", "segment", []), ("avfb", "self", ["--option", "hidden=16", "--option", "mfb_out=40"]),
    ("ave", "video", ["--option", "fusion=gated"]),
])
def test_cli_trains_and_evaluates_the_other_methods(bench, tmp_path, capsys, model, supervision, options):
    dataset, features = bench
    out = tmp_path / model
    assert main(["train", str(dataset), "--model", model, "--supervision", supervision, *options, "--features",
                 str(features), "--size", "64", "--epochs", "1", "--batch-size", "4", "--out", str(out), "-q"]) == 0
    state = load_checkpoint(out / "best.pt")
    assert state["config"]["model"] == model and state["config"]["supervision"] == supervision
    assert main(["eval", str(out / "best.pt"), str(dataset), "--features", str(features), "--size", "64",
                 "--out", str(tmp_path / "r.json"), "-q"]) == 0
    assert "cIoU@0.5" in capsys.readouterr().out
    if model == "avdln":
        assert main(["eval", str(out / "best.pt"), str(dataset), "--task", "cross-modal", "--features",
                     str(features), "--split", "train", "--out", str(tmp_path / "x.json"), "-q"]) == 0
        scores = json.loads((tmp_path / "x.json").read_text())
        printed = capsys.readouterr().out  # the printed line is the report's numbers
        assert f"A2V accuracy {scores['a2v']:.3f}, V2A accuracy {scores['v2a']:.3f} ({scores['clips']} clips" in printed
        train_clips = len(load_manifest(dataset).split("train"))
        assert scores["clips"] + scores["skipped"] == train_clips  # every clip is scored or counted as skipped


def test_models_refuse_what_they_cannot_train_with(bench, tmp_path, capsys):
    dataset, features = bench
    assert main(["train", str(dataset), "--model", "avfb", "--epochs", "1", "--out", str(tmp_path), "-q"]) == 2
    assert "trains on a feature cache only" in capsys.readouterr().err
    assert main(["train", str(dataset), "--model", "avdln", "--supervision", "video", "--features", str(features),
                 "--out", str(tmp_path / "b"), "-q"]) == 2
    assert "trains with --supervision segment or self" in capsys.readouterr().err
    assert main(["train", str(dataset), "--model", "ave", "--option", "fusion", "--features", str(features),
                 "--out", str(tmp_path / "c"), "-q"]) == 2
    assert "--option expects KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("size", [0, -8, 100_000, 2.5])
def test_protocol_refuses_absurd_map_sizes(size):
    with pytest.raises(AvlocError, match="map size"):
        Protocol(size=size)
