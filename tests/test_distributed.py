"""Distributed training: ``torchrun --nproc-per-node 2 -m avloc train`` (gloo, CPU) against one process."""

import pytest
import torch
from tiny_features import run_python, train_args, write_feature_dataset
from torch.utils.data import DataLoader

from avloc import distributed
from avloc.checkpoint import load_checkpoint
from avloc.cli import main
from avloc.data.cache import FeatureCache
from avloc.data.manifest import load_manifest
from avloc.data.windows import FeatureWindows
from avloc.types import AvlocError

# 27 clips: 17 train, so a global batch of 6 ends with a batch of 5 that splits 3 + 2.
TRAIN = ("--epochs", "3", "--batch-size", "6")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_feature_dataset(tmp_path_factory.mktemp("ddp"), clips=27)


def torchrun(*args: str):
    """``torchrun --standalone --nproc-per-node 2 -m avloc ARGS`` (torchrun is torch.distributed.run's script)."""
    return run_python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "avloc", *args)


def _log(path):
    """log.csv rows without the wall-clock column."""
    return [row.split(",")[:-1] for row in (path / "log.csv").read_text().splitlines()]


def _assert_logs_close(log, reference, rtol):
    assert log[0] == reference[0] and len(log) == len(reference)
    for row, expected in zip(log[1:], reference[1:]):
        assert row[:2] == expected[:2]  # epoch, step
        assert [float(v) for v in row[2:]] == pytest.approx([float(v) for v in expected[2:]], rel=rtol)


def test_the_shards_of_a_global_batch_are_the_single_process_batch():
    def batches(world, rank, size=6, n=17):  # as fit loads them
        generator = torch.Generator().manual_seed(5)
        sampler = distributed.ShardedBatchSampler(n, size, generator, shard=(rank, world))
        return [batch.tolist() for batch in DataLoader(range(n), batch_sampler=sampler, generator=generator)]

    single = batches(1, 0)
    # One process: the order of a shuffled DataLoader, as before distributed training.
    loader = DataLoader(range(17), batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(5))
    assert single == [batch.tolist() for batch in loader]
    shards = [batches(2, 0), batches(2, 1)]
    assert [len(b) for b in shards[0]] == [3, 3, 3] and [len(b) for b in shards[1]] == [3, 3, 2]
    for step, batch in enumerate(single):
        assert sorted(shards[0][step] + shards[1][step]) == sorted(batch)
    # A last global batch of 1 cannot be shared by 2 processes: it is dropped by both.
    assert len(batches(1, 0, size=8)) == 3 and len(batches(2, 1, size=8)) == 2
    assert distributed.sequential_shard(5, 2, shard=(1, 2)) == [[2, 3]]
    assert distributed.sequential_shard(5, 1, shard=(0, 2)) == [[0], [2], [4]]


def test_window_starts_depend_on_seed_and_index_only(tiny):
    data, features = tiny
    dataset = load_manifest(data)

    def starts(seed, order, global_seed):
        windows = FeatureWindows(FeatureCache(features), dataset.split("train"), dataset.classes, steps=4)
        windows.window_seed = seed
        torch.manual_seed(global_seed)  # the global RNG must not matter
        return {i: float(windows[i]["times"][0]) for i in order}

    forward = starts(7, range(17), 0)
    assert forward == starts(7, reversed(range(17)), 1)
    assert len(set(forward.values())) > 1 and forward != starts(8, range(17), 0)


def test_single_process_without_torchrun_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    with distributed.process_group():
        assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.rank() == 0
        assert distributed.all_reduce_sum([2, 3.5]) == [2.0, 3.5]
    assert not distributed.is_main()  # torchrun's RANK 1 outside the group: no files, no report
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(AvlocError, match="WORLD_SIZE='two' is not an integer"), distributed.process_group():
        pass


def test_torchrun_two_processes_match_one_without_batchnorm(tiny, tmp_path):
    """STM without BatchNorm: 2 processes x 3 windows train exactly like 1 process x 6 windows.

    Both see the same windows in the same global batches; the only difference is the order of
    float32 sums (per-share gradients averaged by DDP, sums of the last uneven batch weighted
    3/5 and 2/5). Measured after 9 Adam steps: weights within 7e-7 of the single-process run,
    losses within 4e-8 relative; the tolerances below (weights 1e-5, losses 1e-5 relative) are
    ten times that. Resume under torchrun is checked on the way (2 epochs, then --resume to 3).
    No audio dropout: its masks are drawn by each process from its own random stream.
    """
    data, features = tiny
    options = ("--option", "norm=false", "--audio-dropout", "0")
    assert main(train_args(data, features, tmp_path / "single", *TRAIN, *options)) == 0
    first = torchrun(*train_args(data, features, tmp_path / "ddp", "--epochs", "2", "--batch-size", "6", *options))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("best checkpoint") == 1  # one report, from rank 0
    resumed = torchrun(*train_args(data, features, tmp_path / "ddp", *TRAIN, *options, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    single, ddp = load_checkpoint(tmp_path / "single" / "last.pt"), load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ddp["step"] == single["step"] == 9 and ddp["epoch"] == 3
    assert ddp["model"].keys() == single["model"].keys()  # the unwrapped model: no "module." prefix
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=0, atol=1e-5, msg=key)
    for key, value in single["optimizer"]["state"].items():
        torch.testing.assert_close(ddp["optimizer"]["state"][key]["exp_avg"], value["exp_avg"], rtol=1e-3, atol=1e-6)
    _assert_logs_close(_log(tmp_path / "ddp"), _log(tmp_path / "single"), rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "config.yaml", "last.pt", "log.csv", "loss.png"]


def test_torchrun_with_batchnorm_trains_like_one_process_within_tolerance(tiny, tmp_path):
    """STM with BatchNorm: on CPU each process normalises its own share of the batch.

    SyncBatchNorm refuses CPU tensors in torch 2.14 (it is used under NCCL only), so under
    gloo the two runs take different paths: measured on this data, the 2-process run's weights
    are as far from the 1-process run's (0.83 of the distance they travel from the initial
    weights) as a 1-process run with batch 3 is (0.94), and weights cannot be compared. What
    must hold is that it trains as well: the same steps, and its losses within 0.15 of the
    single-process ones (measured gaps: at most 0.07 over 3 epochs).
    """
    data, features = tiny
    assert main(train_args(data, features, tmp_path / "single", *TRAIN)) == 0
    result = torchrun(*train_args(data, features, tmp_path / "ddp", *TRAIN))
    assert result.returncode == 0, result.stderr
    log, reference = _log(tmp_path / "ddp"), _log(tmp_path / "single")
    assert [row[:2] for row in log] == [row[:2] for row in reference]
    for row, expected in zip(log[1:], reference[1:]):
        assert [float(v) for v in row[2:4]] == pytest.approx([float(v) for v in expected[2:4]], abs=0.15)
    assert float(log[-1][2]) < float(log[1][2])  # it learns


def test_batch_size_must_divide_by_the_processes(tiny, tmp_path):
    data, features = tiny
    result = torchrun(*train_args(data, features, tmp_path / "run", "--epochs", "1", "--batch-size", "5"))
    assert result.returncode != 0
    assert "avloc: error: --batch-size 5 is the global batch and must divide by the 2 processes" in result.stderr
    assert not (tmp_path / "run").exists()
