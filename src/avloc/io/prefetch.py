"""Decoding ahead of the encoders: while a GPU encodes one batch, the next is being decoded.

Two ways, for the two shapes of work (both off on the CPU, where decoding and the encoders
share the same cores; :class:`avloc.accelerate.Acceleration`'s ``workers`` turns them on):

- :func:`decoded_chunks` (``avloc extract``): the steps of many videos, decoded by DataLoader
  worker processes (video ``i`` by worker ``i % workers``), handed over in chunks of at most
  ``chunk`` steps, optionally in pinned memory. With ``workers=0`` the same chunks are decoded
  in the calling process, in the order of the jobs.
- :func:`prefetched` (``avloc localize``): any iterator advanced by a background thread, at
  most ``depth`` items ahead (PyAV and swscale release the GIL while they decode and resize).

A decoding error of a video does not cross a process boundary as a traceback: its chunk carries
the one-line message (:attr:`StepChunk.error`) for the caller to raise.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avloc.io.decode import iter_steps
from avloc.types import AvlocError


@dataclass(frozen=True)
class DecodeJob:
    """A video to decode into steps: ``key`` names it in the chunks, ``options`` are
    :func:`avloc.io.decode.iter_steps`' keyword arguments (fps, size, sample_rate, ...)."""

    key: str
    video: str | os.PathLike
    options: dict = field(default_factory=dict)


class StepChunk(NamedTuple):
    """Consecutive steps of one video (a NamedTuple: DataLoader pins its tensors)."""

    key: str
    frames: torch.Tensor  # (n, 3, H, W) float32 in [0, 1]
    segments: torch.Tensor  # (n, L) float32 mono audio
    times: torch.Tensor  # (n,) float64 seconds
    last: bool  # the video's last chunk (n may be 0: a video shorter than one step)
    error: str | None = None  # the video could not be decoded: this message, and no steps


class _ChunkStream(IterableDataset):
    """The chunks of ``jobs``; in a DataLoader worker, of its share of them."""

    def __init__(self, jobs: Sequence[DecodeJob], chunk: int) -> None:
        self.jobs = list(jobs)
        self.chunk = chunk

    def __iter__(self) -> Iterator[StepChunk]:
        worker = get_worker_info()
        mine = self.jobs if worker is None else self.jobs[worker.id :: worker.num_workers]
        for job in mine:
            yield from _chunks(job, self.chunk)


def _chunks(job: DecodeJob, chunk: int) -> Iterator[StepChunk]:
    """One video's chunks, the last one marked (looked ahead by one chunk to know it)."""
    empty = torch.empty(0)
    try:
        steps = iter_steps(job.video, **job.options)
        held = None
        while batch := list(islice(steps, chunk)):
            if held is not None:
                yield held
            held = StepChunk(job.key, torch.stack([step.frame for step in batch]),  # (n, 3, H, W)
                             torch.stack([step.segment for step in batch]),  # (n, L)
                             torch.tensor([step.time for step in batch], dtype=torch.float64), last=False)
    except AvlocError as error:
        yield StepChunk(job.key, empty, empty, empty, last=True, error=str(error))
        return
    yield held._replace(last=True) if held is not None else StepChunk(job.key, empty, empty, empty, last=True)


def decoded_chunks(jobs: Sequence[DecodeJob], chunk: int, workers: int = 0,
                   pin_memory: bool = False) -> Iterator[StepChunk]:
    """Every job's steps in chunks of at most ``chunk``: in order within a video, videos
    interleaved across ``workers`` processes (0: decoded here, one video after the other)."""
    if chunk < 1 or workers < 0:
        raise ValueError(f"chunk must be >= 1 and workers >= 0, got {chunk} and {workers}")
    stream = _ChunkStream(jobs, chunk)
    if workers == 0 or not jobs:
        yield from stream
        return
    yield from DataLoader(stream, batch_size=None, num_workers=min(workers, len(jobs)), pin_memory=pin_memory)


_END = object()  # the iterator is exhausted


def prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """``items``, advanced by a background thread at most ``depth`` items ahead of the caller.

    An exception of ``items`` is raised to the caller where it would have come; closing this
    generator early (or an error of the caller) stops the thread at its next item.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def advance() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            put((_END, error))

    thread = threading.Thread(target=advance, name="avloc-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
