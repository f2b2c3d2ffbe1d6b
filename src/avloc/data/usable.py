"""Which clips' videos can be read: one quick look at each video before a run decodes them.

A clip's video is *readable* when the file exists, its headers read (:func:`avloc.io.decode.probe`),
its first frame decodes and it has an audio stream (every command encodes the sound of every
step). That costs the headers and one frame, not the whole video, so ``avloc extract``,
``avloc train`` and ``avloc eval`` look at every clip before their first step of work:

- without ``--skip-broken`` the first unreadable clip stops the run with one line naming its
  file and the reason (:class:`BrokenClipError`);
- with it, unreadable clips are left out, listed with their reasons in a text file beside the
  output (:func:`write_skipped`: ``<id><TAB><reason>`` per line) and summed up as
  ``used N of M clips, K skipped: see FILE`` (:func:`skipped_summary`).

A file cut short further in is only found when it is decoded there; that still stops the run
with a one-line error naming the file. ``avloc datasets check`` adds what only a check needs
(:func:`length_problem`): every annotated frame and segment inside the video's duration.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from avloc.atomic import atomic_path
from avloc.data.manifest import ClipRecord, NativeDataset
from avloc.data.sources import load_dataset
from avloc.io.decode import iter_frames, probe
from avloc.types import AvlocError, VideoInfo

log = logging.getLogger(__name__)

NOISY_PREFIX = "noisy-"  # AVE's weak negatives (avloc.data.formats.ave_features.noisy_id): features only
# A segment may end this much after the video: 10-s clips cut from YouTube often decode a few
# frames short of their nominal length, and a label boundary is not a frame to show.
SEGMENT_SLACK = 0.5
SKIP_HINT = "--skip-broken leaves such clips out"


class BrokenClipError(AvlocError):
    """A clip whose video cannot be read (the message names the file and the reason)."""


@dataclass(frozen=True)
class Skipped:
    """A clip left out of a run, and why (a one-line reason that names its file)."""

    id: str
    reason: str


def check_video(path: str | os.PathLike) -> VideoInfo:
    """The video's headers, once its first frame has decoded and an audio stream is found.

    Raises:
        AvlocError: the file is missing, not a video, has no decodable frame or no audio stream.
    """
    if Path(path).is_file() and Path(path).stat().st_size == 0:  # FFmpeg would only say "invalid data"
        raise AvlocError(f"{path}: an empty file (0 bytes), not a video")
    info = probe(path)
    if not info.has_audio:
        raise AvlocError(f"{info.path}: no audio stream (a silent video has no sound to localise)")
    frames = iter_frames(path)
    try:
        first = next(frames, None)
    finally:
        frames.close()
    if first is None:
        raise AvlocError(f"{info.path}: no decodable video frame")
    return info


def length_problem(record: ClipRecord, info: VideoInfo) -> str | None:
    """Why the annotations of ``record`` do not fit in its video's duration, or None when they do.

    Annotated frames must lie before the end; segments may end up to :data:`SEGMENT_SLACK`
    seconds after it.
    """
    late = [frame.t for frame in record.frames if frame.t >= info.duration]
    if late:
        return (f"{info.path}: {info.duration:g} s long, but {len(late)} annotated frame(s) lie at or after its end "
                f"(the first at {min(late):g} s)")
    end = max((segment.end for segment in record.segments), default=0.0)
    if end > info.duration + SEGMENT_SLACK:
        return f"{info.path}: {info.duration:g} s long, but its segments run to {end:g} s"
    return None


def usable_clips(records: Sequence[ClipRecord], skip_broken: bool,
                 check: Callable[[ClipRecord], VideoInfo] | None = None, progress: bool = False,
                 ) -> tuple[list[ClipRecord], dict[str, VideoInfo], list[Skipped]]:
    """The records whose video passes ``check`` (default: :func:`check_video` of ``record.video``).

    Returns:
        ``(usable records in their order, {id: VideoInfo}, skipped)``; ``skipped`` is empty
        unless ``skip_broken``.

    Raises:
        BrokenClipError: the first clip that fails, when not ``skip_broken``.
    """
    check = check or (lambda record: check_video(record.video))
    good, infos, skipped = [], {}, []
    for record in tqdm(records, desc="check videos", unit="clip", leave=False, disable=not progress):
        try:
            infos[record.id] = check(record)
        except AvlocError as error:
            if not skip_broken:
                raise BrokenClipError(f"{error} (clip {record.id!r}; {SKIP_HINT})") from None
            skipped.append(Skipped(record.id, str(error)))
            continue
        good.append(record)
    return good, infos, skipped


def write_skipped(path: str | os.PathLike, skipped: Sequence[Skipped]) -> Path | None:
    """List ``skipped`` in ``path`` (``<id><TAB><reason>`` per line), atomically; with none, remove
    a list left by an earlier run and return None."""
    path = Path(path)
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{s.id}\t{s.reason}\n" for s in skipped), encoding="utf-8")
    return path


def skipped_summary(used: int, total: int, skipped: int, path: str | os.PathLike | None) -> str:
    """``used N of M clips, K skipped: see FILE`` (``, none skipped`` without a file)."""
    if not skipped or path is None:
        return f"used {used} of {total} clips, none skipped"
    return f"used {used} of {total} clips, {skipped} skipped: see {path}"



def record_skipped(path: str | os.PathLike, used: int, total: int, skipped: Sequence[Skipped],
                   announce: bool = False) -> str:
    """Write the list of ``skipped`` clips to ``path`` (:func:`write_skipped`) and return the summary line
    (also logged as a warning when ``announce``).

    Raises:
        AvlocError: no clip is left to use (the list is still written).
    """
    written = write_skipped(path, skipped)
    summary = skipped_summary(used, total, len(skipped), written)
    if used == 0 and skipped:
        raise AvlocError(f"no clip left to use: the videos of all {total} clips cannot be read (see {written})")
    if announce:
        log.warning("%s", summary)
    return summary


def load_for_videos(path: str | os.PathLike, skip_broken: bool) -> NativeDataset:
    """A dataset whose clips a run decodes from their videos.

    Without ``skip_broken`` every video must exist (the first missing one is refused in one line,
    as :func:`~avloc.data.sources.load_dataset` does); with it, missing videos are left to
    :func:`usable_clips` to list, and AVE's weak negatives, which exist only as features, are
    not loaded.
    """
    dataset = load_dataset(path, require_videos=not skip_broken)
    if not skip_broken:
        return dataset
    return replace(dataset, records=tuple(r for r in dataset.records if not r.id.startswith(NOISY_PREFIX)))
