"""DDP scaling of `avloc train`: 1 process against 2 (torchrun, gloo, CPU), same global batch; kill/resume.

    python bench/ddp_scaling.py [--clips 96] [--epochs 5] [--batch-size 16] [--repeats 3]

Makes a synthetic benchmark and its feature cache (128 px clips, features at 256 px; not
timed), then trains the default STM (c+u, 256 channels, BatchNorm) on it three ways, each a
fresh command: 1 process x 1 thread, 1 process x all cores' threads, and
`torchrun --nproc-per-node 2` x 1 thread. Throughput is training windows per second of epoch
time (training + validation, from log.csv; the median of epochs 2 to the last); wall time is
the whole command (start-up and rendezvous included). The setups take turns ``--repeats``
times and each keeps its fastest run, since other jobs share the machine.

Then the fault: the 2-process run again, SIGKILL to its whole process group (torchrun and both
workers, as when a machine dies) in the middle of epoch 3, `--resume` to the end, and the
result compared with the uninterrupted 2-process run. Results go to the "DDP scaling" and
"Kill and resume" sections of docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_md import command, update_section

from avloc.checkpoint import load_checkpoint
from avloc.data.manifest import load_manifest
from avloc.data.benchmarks.synth import generate_dataset
from avloc.extract import extract_features

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def train_command(data: Path, features: Path, out: Path, args: argparse.Namespace, processes: int) -> list[str]:
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    return [*launcher, "-m", "avloc", "train", str(data), "--features", str(features), "--out", str(out),
            "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "-q"]


def environment(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}


def log_rows(run: Path) -> list[dict]:
    lines = (run / "log.csv").read_text().splitlines()
    return [dict(zip(lines[0].split(","), map(float, line.split(",")))) for line in lines[1:]]


def losses(run: Path) -> list[dict]:
    """log.csv without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in log_rows(run)]


def measure(cmd: list[str], threads: int, out: Path, windows: int) -> dict:
    """Run one training command; its throughput, wall time and final losses."""
    started = time.perf_counter()
    subprocess.run(cmd, env=environment(threads), check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    rows = log_rows(out)
    epoch = statistics.median(row["seconds"] for row in rows[1:])
    return {"epoch_s": epoch, "windows_s": windows / epoch, "wall_s": wall, "train_loss": rows[-1]["train_loss"],
            "val_loss": rows[-1]["val_loss"]}


def kill_mid_epoch(cmd: list[str], out: Path, epoch_s: float, after_epoch: int) -> int:
    """Start ``cmd`` in its own process group; SIGKILL the group half an epoch after epoch ``after_epoch``."""
    process = subprocess.Popen(cmd, env=environment(1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    while not (out / "last.pt").is_file() or load_checkpoint(out / "last.pt")["epoch"] < after_epoch:
        if process.poll() is not None:
            raise RuntimeError("the run ended before it could be killed")
        time.sleep(0.05)
    time.sleep(epoch_s / 2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return load_checkpoint(out / "last.pt")["epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setup; the fastest is kept")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = generate_dataset(root / "data", clips=args.clips, seed=0, size=128, seconds=args.seconds,
                                progress=False)
        features = root / "features.h5"
        extract_features(data, features, size=256, progress=False)
        windows = len(load_manifest(data).split("train"))
        setups = [("1 process x 1 thread", 1, 1), (f"1 process x {cores} threads", 1, cores),
                  ("2 processes x 1 thread (torchrun, gloo)", 2, 1)]
        load = os.getloadavg()[0]
        results: dict[str, dict] = {}
        for repeat in range(args.repeats):
            for name, processes, threads in setups:
                out = root / f"run-{processes}-{threads}-{repeat}"
                r = measure(train_command(data, features, out, args, processes), threads, out, windows)
                print(f"{name:42s} {r['epoch_s']:6.2f} s/epoch {r['windows_s']:6.1f} windows/s {r['wall_s']:6.1f} s "
                      f"wall, train loss {r['train_loss']:.4f} val loss {r['val_loss']:.4f}")
                if name not in results or r["epoch_s"] < results[name]["epoch_s"]:
                    results[name] = r
        two = root / "run-2-1-0"
        killed = root / "killed"
        cmd = train_command(data, features, killed, args, 2)
        stopped = kill_mid_epoch(cmd, killed, results[setups[2][0]]["epoch_s"], after_epoch=2)
        subprocess.run([*cmd, "--resume"], env=environment(1), check=True, stdout=subprocess.DEVNULL)
        resumed, straight = load_checkpoint(killed / "last.pt"), load_checkpoint(two / "last.pt")
        gap = max((resumed["model"][k].double() - v.double()).abs().max().item()
                  for k, v in straight["model"].items())
        same_log = losses(killed) == losses(two)
        print(f"killed after epoch {stopped}, resumed to step {resumed['step']} (uninterrupted: {straight['step']}); "
              f"max |weight difference| {gap:.3g}; log identical: {same_log}")

    one, many, ddp = (results[name]["windows_s"] for name, _, _ in setups)
    header = ("| setup | s / epoch | training windows / s | speed-up vs 1 x 1 | wall (whole command) | "
              "final train loss | final val loss |")
    table = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    table += [f"| {name} | {r['epoch_s']:.2f} | {r['windows_s']:.1f} | {r['windows_s'] / one:.2f}x | "
              f"{r['wall_s']:.1f} s | {r['train_loss']:.4f} | {r['val_loss']:.4f} |" for name, r in results.items()]
    update_section("DDP scaling", (
        f"`{command()}` — the default STM (c+u, 256 channels, BatchNorm) on the features of {args.clips} synthetic "
        f"clips of {args.seconds:g} s ({windows} training windows of 4 steps, 16x16 visual maps), global batch "
        f"{args.batch_size}, {args.epochs} epochs; s / epoch is the median of epochs 2-{args.epochs} "
        f"(training + validation), the fastest of {args.repeats} runs per setup taking turns.\n\n"
        + "\n".join(table) + "\n\n"
        f"This machine has {cores} cores, shared with other jobs (load average {load:.1f} when the benchmark "
        "started), so these numbers are noisy. Two processes of one "
        "thread use the same two cores as one process of two threads: DDP cannot add compute here, it can only "
        "trade torch's intra-op threading for one process per core plus a gloo all-reduce of the gradients "
        f"every step. Measured: 2 processes ran at {ddp / one:.2f}x the throughput of 1 process x 1 thread and "
        f"{ddp / many:.2f}x that of 1 process x {cores} threads. "
        "The scaling that matters (N GPUs under NCCL) cannot be measured on this machine. The "
        "2-process run's losses differ from the 1-process runs' because on CPU each process normalises its own "
        "half of the batch (SyncBatchNorm needs GPUs); without BatchNorm the runs agree to float rounding "
        "(tests/test_distributed.py)."
    ))
    update_section("Kill and resume", (
        f"`{command()}` — the 2-process run above, SIGKILLed (torchrun and both workers) half an epoch after "
        f"epoch {stopped} ended, then `--resume`d to epoch {args.epochs}: step {resumed['step']} "
        f"(uninterrupted: {straight['step']}), largest weight difference from the uninterrupted run {gap:.3g}, "
        f"log.csv losses and accuracies {'identical' if same_log else 'different'}.\n\n"
        "tests/test_faults.py checks the same for one process (SIGKILL mid-epoch, `--resume`: model, Adam state, "
        "step count and log bit-identical to an uninterrupted run) and for `avloc extract` (SIGKILL mid-run: "
        "every part on disk is whole, the rerun reports the finished clips as already done and skips them, and "
        "the final cache equals a clean run's)."
    ))


if __name__ == "__main__":
    main()
