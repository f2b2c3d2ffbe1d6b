"""``avloc datasets convert``: the field's dataset layouts -> avloc's native format.

Every converter reads a layout's annotation files (with the readers of :mod:`avloc.data`),
finds each clip's video by name below ``videos``, places it in ``OUT/videos/`` (a symbolic
link by default, or a hard link or a copy) and writes ``OUT/manifest.jsonl`` atomically.
Boxes become original video pixels (the videos are probed for their size), so that
``avloc train`` / ``avloc eval`` read every dataset the same way. Clips whose video is
missing are left out of the manifest (their boxes need the video's size) and listed in
``OUT/missing_videos.txt``, one tab-separated line each: the file name looked for, the source
id (the YouTube id; a Flickr or AVATAR id), the time window of the source video where the
annotations give it (AudioSet-Instrument's CSV start-end, VGGSound's ``<id>_<start>`` + 10 s,
AVE's 10-s clip: 0-10 with the event), the clip id and a note. A conversion that finds no video
at all writes that list alone (no manifest, no ``videos/`` folder) and fails, naming it.

Layouts and where the annotated frame lies in time:

- ``ave``: ``Annotations.txt`` (a header line is skipped) + ``*_order.h5`` (official split,
  segments per second), or the STM authors' split files ``trainSet.txt`` / ``valSet.txt`` /
  ``testSet.txt`` (:func:`avloc.data.sources.load_ave_splits`); ``--boxes`` a folder of the
  STM authors' CVAT files (``<youtube id>/annotations.xml``, or one video's folder holding
  ``annotations.xml``): every CVAT frame ``n`` at ``n * 10 / size`` s, boxes
  rescaled from the CVAT task's size. A video's CVAT file belongs to its sample(s) in the
  test split (the files annotate AVE's test videos), or to its only sample when it has no
  test sample; a two-event video's other samples get no frames. Only the frames inside the
  sample's event are kept (the seconds outside it are background: not scored). Scenario of a
  kept frame: no box = ``off-screen``, one box = ``single``, several = ``multi-entity`` (one
  event class per sample: several objects of that class; ``mixed`` on AudioSet-Instrument
  rows with several instruments).
- ``audioset-instrument``: the STM authors' split CSVs (``train/val/test.csv`` that exist),
  video label = the first of the row's instruments (brass merged), ``multi-source`` tag on
  rows with several; ``--boxes`` as for AVE (the whole clip is the event).
- ``vggss``: the VGG-SS JSON; one annotated frame at ``--frame-time`` (default the middle of
  the video, where the LVS test frames are taken); all clips in the test split. Pixel boxes
  from the usable boxes only; every box as written in ``source_boxes`` (format ``vggss``).
- ``flickr``: a folder of Flickr-SoundNet XML files; the media of ``<id>`` is a video, or an
  image + an audio file that are joined into a still video; the frame at ``--frame-time``
  (default the middle) with ``ground_truth: consensus``; label ``unlabelled`` (the test set
  has no classes); ``source_boxes`` (format ``flickr``) as the LVS / EZ-VSL scripts read them.
- ``avatar``: ``<video id>/<frame>.json`` files; ``<frame>`` is a frame index of the video
  (time = index / frame rate) or, with a decimal point, a time in seconds; scenarios from
  ``task``; a frame without annotations is ``off-screen`` (nothing sounding on screen);
  polygons kept as masks; video label = the most frequent category.

What a conversion had to decide (box files matched, degenerate boxes, frames left out,
annotated frames per split) is returned as :attr:`ConvertResult.notes` and logged.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from avloc.atomic import atomic_path, make_folder
from avloc.data.formats import audioset_instrument, ave, cvat
from avloc.data.formats.flickr import read_flickr_xml
from avloc.data.manifest import BACKGROUND, SPLITS, ClipRecord, FrameAnnotation, write_manifest
from avloc.data.formats.media import find_media
from avloc.data.formats.vggss import read_vggss_file
from avloc.io.decode import VideoInfo, probe
from avloc.types import AvlocError

log = logging.getLogger(__name__)

LAYOUTS = ("ave", "audioset-instrument", "vggss", "flickr", "avatar")
LINK_MODES = ("symlink", "hardlink", "copy")
AVATAR_SCENARIOS = {"single-sound": "single", "single": "single", "mixed-sound": "mixed", "mixed": "mixed",
                    "multi-entity": "multi-entity", "off-screen": "off-screen", "offscreen": "off-screen"}
UNLABELLED = "unlabelled"
CVAT_FILE = "annotations.xml"
LISTED = 5  # ids named in a note before "..."


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote: the manifest, its clips and annotated frames, the clips left out."""

    manifest: Path
    clips: int
    annotated_frames: int
    missing: tuple[str, ...]  # clip ids whose video was not found
    notes: tuple[str, ...] = ()  # what the conversion decided, one line each (also logged)
    missing_list: Path | None = None  # OUT/missing_videos.txt: what to fetch (None when nothing is missing)


@dataclass(frozen=True)
class _Clip:
    """A clip before its video is placed: the annotations, with frames in original pixels."""

    id: str
    media: str  # the file stem to look for below --videos
    split: str
    label: str
    segments: tuple = ()
    frames: tuple[FrameAnnotation, ...] = ()
    tags: tuple[str, ...] = ()
    frame_keys: tuple[int | float, ...] = ()  # AVATAR: each frame's file stem (index or seconds)
    box_file: Path | None = None  # the CVAT file whose frames this clip receives
    window: tuple[float, float] | None = None  # seconds of the source video the clip is, where known
    event: tuple[float, float] | None = None  # AVE: the sample's event inside its 10-s clip


class _Media:
    """Media files below a folder by stem and kind, found once; VGGSound's padding tolerated."""

    def __init__(self, folder: Path):
        self.files = find_media(folder)

    def get(self, stem: str, kind: str) -> Path | None:
        found = self.files.get(stem) or self.files.get(_padded(stem)) or {}
        return found.get(kind)


def _padded(stem: str) -> str:
    """VGGSound names ``<youtube id>_<start>``: the start zero-padded to 6 digits, as the files are."""
    head, _, tail = stem.rpartition("_")
    return f"{head}_{int(tail):06d}" if head and tail.isdigit() else stem


def convert_dataset(layout: str, source: str | os.PathLike, out: str | os.PathLike,
                    videos: str | os.PathLike | None = None, boxes: str | os.PathLike | None = None,
                    link: str = "symlink", split: str = "test", frame_time: float | None = None,
                    progress: bool = True) -> ConvertResult:
    """Convert ``source`` (a ``layout`` annotation file or folder) into a native dataset at ``out``.

    Args:
        layout: one of :data:`LAYOUTS`.
        source: the annotation file (VGG-SS JSON) or folder of the layout.
        out: the native dataset folder to write (created; its manifest is replaced).
        videos: the folder holding the videos (default: ``source``'s folder).
        boxes: the STM authors' CVAT folder (``ave``, ``audioset-instrument``), optional.
        link: how videos enter ``out/videos``: ``symlink``, ``hardlink`` or ``copy``.
        split: the split of layouts without one (``vggss``, ``flickr``, ``avatar``).
        frame_time: seconds of the annotated frame (``vggss``, ``flickr``); None = the middle.
    """
    if layout not in LAYOUTS:
        raise AvlocError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if link not in LINK_MODES:
        raise AvlocError(f"unknown --link {link!r}; expected one of {', '.join(LINK_MODES)}")
    source = Path(source)
    if not source.exists():
        raise AvlocError(f"{source}: no such file or folder")
    media_root = Path(videos) if videos is not None else (source if source.is_dir() else source.parent)
    if not media_root.is_dir():
        raise AvlocError(f"{media_root}: no such videos folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AvlocError(f"{out}: is a file; expected the dataset folder to write")
    media = _Media(media_root)
    readers = {"ave": _ave_clips, "audioset-instrument": _instrument_clips, "vggss": _vggss_clips,
               "flickr": _flickr_clips, "avatar": _avatar_clips}
    notes: list[str] = []
    clips = readers[layout](source, split, notes)
    box_folder = Path(boxes) if boxes is not None else None
    if box_folder is not None and not box_folder.is_dir():
        raise AvlocError(f"{box_folder}: no such folder of CVAT annotations")
    if box_folder is not None and layout in ("ave", "audioset-instrument"):
        clips = _assign_box_files(clips, box_folder, notes)
    records, missing, outside = [], [], Counter()
    absent = [clip for clip in clips if not _has_media(clip, media, layout)]
    if len(absent) == len(clips):  # nothing to convert: only the list of what to fetch, no empty dataset
        listed = _write_missing(out, absent, layout, media_root)
        raise AvlocError(f"{media_root}: none of the {len(clips)} clips' videos was found (looked for files named by "
                         f"the {_NAMED_BY[layout]}, e.g. {clips[0].media}.mp4, searched recursively; pass --videos "
                         f"FOLDER); wrote {listed}: every clip's source id and time window, to fetch")
    for clip in tqdm(clips, desc=f"convert {layout}", unit="clip", disable=not progress):
        video = _place(clip, media, out, link, layout)
        if video is None:
            missing.append(clip.id)
            continue
        info = probe(video)
        frames = _frames(clip, info, layout, frame_time, outside)
        records.append(ClipRecord(id=clip.id, video=video.absolute(), split=clip.split, label=clip.label,
                                  segments=clip.segments, frames=frames, tags=clip.tags))
    manifest = write_manifest(out, records)
    listed = _write_missing(out, absent, layout, media_root)
    if listed is not None:
        notes.append(f"{len(absent)} of {len(clips)} clips left out, their videos were not found below {media_root}: "
                     f"{listed} lists each one's source id and time window, to fetch (then run this again)")
    if outside["frames"]:
        notes.append(f"{outside['frames']} CVAT frames outside their sample's event (background seconds) are not "
                     f"scored and were left out ({outside['boxed']} of them had boxes)")
    per_split = Counter(r.split for r in records for _ in r.frames)
    notes.append("annotated frames per split: " + ", ".join(f"{name} {per_split[name]}" for name in SPLITS))
    for note in notes:
        log.warning("%s", note)
    return ConvertResult(manifest, len(records), sum(len(r.frames) for r in records), tuple(missing), tuple(notes),
                         listed)


MISSING_LIST = "missing_videos.txt"
# What each layout's videos are named by (the stem looked for below --videos).
_NAMED_BY = {"ave": "YouTube id", "audioset-instrument": "YouTube id",
             "vggss": "VGGSound name <YouTube id>_<start seconds>", "flickr": "Flickr id (or <id>.jpg + <id>.wav)",
             "avatar": "video id"}


def _write_missing(out: Path, absent: list[_Clip], layout: str, media_root: Path) -> Path | None:
    """``OUT/missing_videos.txt``: a tab-separated line per clip whose video was not found (what to
    fetch); with none, a list left by an earlier conversion is removed and None returned."""
    path = out / MISSING_LIST
    if not absent:
        path.unlink(missing_ok=True)
        return None
    lines = [f"# {len(absent)} clips whose video was not found below {media_root}. Fetch each one, name it "
             "<file name>.mp4 (or .mkv .webm .avi .mov),",
             f"# put it below --videos and run avloc datasets convert {layout} again. start, end: {_WINDOWS[layout]}.",
             "file name\tsource id\tstart\tend\tclip id" + ("\tevent" if layout == "ave" else "")]
    for clip in absent:
        start, end = ("-", "-") if clip.window is None else (f"{clip.window[0]:g}", f"{clip.window[1]:g}")
        event = "" if clip.event is None else f"\t{clip.event[0]:g}-{clip.event[1]:g} s"
        lines.append(f"{clip.media}\t{_source_id(clip, layout)}\t{start}\t{end}\t{clip.id}{event}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


_WINDOWS = {"ave": "the 10-s clip AVE distributes (its offset in the YouTube video is not published: 0-10); "
                   "event: the sample's event in it",
            "audioset-instrument": "seconds of the YouTube video (the CSV's start and end)",
            "vggss": "seconds of the YouTube video (VGGSound's <id>_<start>, 10 s)",
            "flickr": "none (Flickr-SoundNet's test image and its sound)",
            "avatar": "not in the annotations (the whole video)"}


def _source_id(clip: _Clip, layout: str) -> str:
    """The id to fetch by: the YouTube id (VGGSound names carry the start after it)."""
    if layout == "vggss":
        head, _, tail = clip.media.rpartition("_")
        return head if head and tail.isdigit() else clip.media
    return clip.media


def _vggss_window(name: str) -> tuple[float, float] | None:
    """VGGSound's ``<YouTube id>_<start>``: the 10-s clip from ``start``; None for another name."""
    head, _, tail = name.rpartition("_")
    return (float(int(tail)), float(int(tail) + 10)) if head and tail.isdigit() else None


def _has_media(clip: _Clip, media: _Media, layout: str) -> bool:
    """Whether :func:`_place` finds the clip's video (or, for Flickr, its image and sound)."""
    if media.get(clip.media, "video") is not None:
        return True
    return layout == "flickr" and None not in (media.get(clip.media, "image"), media.get(clip.media, "audio"))


def _listed(names: list[str]) -> str:
    return ", ".join(names[:LISTED]) + (" ..." if len(names) > LISTED else "")


def _assign_box_files(clips: list[_Clip], box_folder: Path, notes: list[str]) -> list[_Clip]:
    """Give each CVAT file (``<video>/annotations.xml``) to the clip(s) it annotates (see the module docstring).

    Raises AvlocError when no file names a clip, naming a subfolder whose files do if there is one.
    """
    files = {path.parent.name: path for path in sorted(box_folder.glob(f"*/{CVAT_FILE}"))}
    if not files and (box_folder / CVAT_FILE).is_file():  # one video's folder: <youtube id>/annotations.xml
        files = {box_folder.resolve().name: box_folder / CVAT_FILE}
    by_video: dict[str, list[_Clip]] = defaultdict(list)
    for clip in clips:
        by_video[clip.media].append(clip)
    matched = sorted(files.keys() & by_video.keys())
    if not matched:
        raise AvlocError(_no_match(box_folder, len(files), by_video.keys()))
    unmatched = sorted(files.keys() - by_video.keys())
    notes.append(f"{box_folder}: {len(matched)} CVAT box files match a clip, {len(unmatched)} do not"
                 + (f" ({_listed(unmatched)})" if unmatched else ""))
    owner: dict[str, Path] = {}
    shared, unused = [], []
    for video in matched:
        samples = by_video[video]
        owners = [c for c in samples if c.split == "test"] or (samples if len(samples) == 1 else [])
        owner.update((c.id, files[video]) for c in owners)
        if len(samples) > 1:
            shared += [c.id for c in samples if c not in owners]
        if not owners:
            unused.append(video)
    if shared:
        notes.append(f"{len(shared)} samples of videos with several events get no CVAT frames (the boxes belong to "
                     f"the video's test-split sample): {_listed(shared)}")
    if unused:
        notes.append(f"{len(unused)} CVAT files not used: their video has several samples, none in the test split "
                     f"({_listed(unused)})")
    without = sorted(c.id for c in clips if c.split == "test" and c.media not in files)
    if without:
        notes.append(f"{len(without)} test clips have no CVAT file in {box_folder} ({_listed(without)})")
    return [replace(c, box_file=owner.get(c.id)) for c in clips]


def _no_match(box_folder: Path, count: int, videos) -> str:
    """The one-line error for a --boxes folder none of whose files names a clip."""
    held = (f"none of its {count} <video id>/{CVAT_FILE} files names" if count
            else f"it holds no <video id>/{CVAT_FILE} file for")
    best, best_count = None, 0
    for sub in sorted(p for p in box_folder.iterdir() if p.is_dir()):
        hits = sum(path.parent.name in videos for path in sub.glob(f"*/{CVAT_FILE}"))
        if hits > best_count:
            best, best_count = sub, hits
    hint = (f"; {best} holds {best_count} that do: pass --boxes {best}" if best is not None
            else "; no subfolder holds any either")
    return f"{box_folder}: {held} a clip of the dataset{hint}"


# ---------------------------------------------------------------------------------------
# Videos


def _place(clip: _Clip, media: _Media, out: Path, link: str, layout: str) -> Path | None:
    """``out/videos/<file>`` for the clip's media (a still video for Flickr's image + audio)."""
    video = media.get(clip.media, "video")
    if video is not None:
        target = out / "videos" / video.name
        make_folder(target.parent)  # only once a clip has its media: never an empty videos/ folder
        _link(video, target, link)
        return target
    image, audio = media.get(clip.media, "image"), media.get(clip.media, "audio")
    if layout != "flickr" or image is None or audio is None:
        return None
    target = out / "videos" / f"{clip.media}.mp4"
    make_folder(target.parent)
    if not target.is_file():
        write_still_video(image, audio, target)
    return target


def _link(source: Path, target: Path, mode: str) -> None:
    if target.is_symlink() or target.exists():
        if target.resolve() == source.resolve():
            return
        target.unlink()
    if mode == "symlink":
        target.symlink_to(source.resolve())
    elif mode == "hardlink":
        os.link(source, target)
    else:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def write_still_video(image: Path, audio: Path, out: Path, fps: float = 4.0) -> None:
    """An MP4 showing ``image`` for the whole length of ``audio`` (both decoded with PyAV)."""
    from avloc.io.write import VideoWriter

    picture = _read_image(image)
    height, width = picture.shape[0] // 2 * 2, picture.shape[1] // 2 * 2  # H.264 4:2:0: even sizes
    rate, samples = _read_audio_file(audio)
    seconds = samples.shape[1] / rate
    if seconds <= 0:
        raise AvlocError(f"{audio}: no audio samples")
    with VideoWriter(out, fps, width, height, sample_rate=rate, channels=samples.shape[0]) as writer:
        for _ in range(max(1, round(seconds * fps))):
            writer.write_frame(picture[:height, :width])
        writer.write_audio(samples)


def _read_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or min(image.shape[:2]) < 2:
        raise AvlocError(f"{path}: not a readable image of at least 2 x 2 pixels")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_audio_file(path: Path) -> tuple[int, np.ndarray]:
    """``(sample_rate, (C, S) float32)`` of an audio file, C = 1 or 2."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AvlocError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            layout = "stereo" if (stream.codec_context.channels or 1) >= 2 else "mono"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=stream.codec_context.sample_rate)
            blocks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
            blocks += [out.to_ndarray() for out in resampler.resample(None)]
            rate = stream.codec_context.sample_rate
    except av.FFmpegError as error:
        raise AvlocError(f"{path}: not a readable audio file ({error.strerror or error})") from None
    if not blocks:
        raise AvlocError(f"{path}: no audio samples")
    samples = np.concatenate(blocks, axis=1).astype(np.float32)  # (C, S)
    if not np.isfinite(samples).all():
        raise AvlocError(f"{path}: the audio holds NaN or infinite samples")
    return rate, samples


# ---------------------------------------------------------------------------------------
# Frames


def _frames(clip: _Clip, info: VideoInfo, layout: str, frame_time: float | None,
            outside: Counter) -> tuple[FrameAnnotation, ...]:
    """The clip's annotated frames in pixels of its video (``outside`` counts CVAT frames left out)."""
    if layout in ("ave", "audioset-instrument"):
        return _cvat_frames(clip, info, outside)
    if layout in ("vggss", "flickr"):
        t = info.duration / 2 if frame_time is None else frame_time
        if not 0 <= t < info.duration:
            raise AvlocError(f"{info.path}: --frame-time {t:g} s is outside the video ({info.duration:g} s)")
        (frame,) = clip.frames  # normalised [0, 1] boxes, placed at t in the video's pixels
        scale = np.array([info.width, info.height, info.width, info.height])
        boxes, _ = _clipped(np.asarray(frame.boxes).reshape(-1, 4) * scale, info)  # (N, 4)
        return (replace(frame, t=t, boxes=boxes),)
    return _avatar_frames(clip, info)


def _clipped(boxes: np.ndarray, info: VideoInfo) -> tuple[tuple[tuple[float, ...], ...], np.ndarray]:
    """``(N, 4)`` boxes clipped to the frame, without those left empty; and which were kept."""
    limits = [info.width, info.height, info.width, info.height]
    clipped = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, limits)  # (N, 4)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return tuple(tuple(float(v) for v in box) for box in clipped[keep]), keep


def _cvat_frames(clip: _Clip, info: VideoInfo, outside: Counter) -> tuple[FrameAnnotation, ...]:
    """The CVAT frames inside the clip's event, with their scenario (see the module docstring)."""
    if clip.box_file is None:
        return ()
    annotation = cvat.read_cvat(clip.box_file)
    sx, sy = info.width / annotation.width, info.height / annotation.height
    scale = np.array([sx, sy, sx, sy])
    events = [(s.start, s.end) for s in clip.segments if s.label != BACKGROUND] if clip.segments else [(0, np.inf)]
    several = "mixed" if "multi-source" in clip.tags else "multi-entity"
    frames = []
    for n, boxes in enumerate(annotation.boxes):
        t = n * annotation.seconds / annotation.frame_count
        if not any(start <= t < end for start, end in events):
            outside["frames"] += 1
            outside["boxed"] += bool(len(boxes))
            continue
        pixels = _clipped(boxes * scale, info)[0]
        scenario = "off-screen" if not pixels else "single" if len(pixels) == 1 else several
        frames.append(FrameAnnotation(t, pixels, scenario))
    return tuple(frames)


def _avatar_frames(clip: _Clip, info: VideoInfo) -> tuple[FrameAnnotation, ...]:
    if not info.frame_rate and any(isinstance(key, int) for key in clip.frame_keys):
        raise AvlocError(f"{info.path}: no frame rate to place the frame indices of the annotations in time")
    frames = []
    for key, frame in zip(clip.frame_keys, clip.frames):
        t = key if isinstance(key, float) else key / info.frame_rate
        boxes, keep = _clipped(np.asarray(frame.boxes).reshape(-1, 4), info)
        masks = tuple(m for m, kept in zip(frame.masks, keep) if kept) if frame.masks else ()
        frames.append(FrameAnnotation(float(t), boxes, frame.scenario, masks))
    return tuple(sorted(frames, key=lambda f: f.t))


# ---------------------------------------------------------------------------------------
# Layouts -> clips


def _ave_clips(source: Path, split: str, notes: list[str]) -> list[_Clip]:
    from avloc.data.sources import load_dataset

    dataset = load_dataset(source, require_videos=False)
    header = ave.header_line(source / ave.ANNOTATIONS)
    if header is not None:
        notes.append(f"{source / ave.ANNOTATIONS}: header line {header!r} skipped (row 0 is the first data line)")
    return [_Clip(r.id, r.video.stem, r.split, r.label, r.segments, window=(0.0, float(ave.SECONDS)),
                  event=next(((s.start, s.end) for s in r.segments if s.label != BACKGROUND), None))
            for r in dataset.records if not r.id.startswith("noisy-")]


def _instrument_clips(source: Path, split: str, notes: list[str]) -> list[_Clip]:
    if not source.is_dir():
        raise AvlocError(f"{source}: expected the folder holding train.csv / val.csv / test.csv")
    clips = []
    for name in ("train", "val", "test"):
        path = source / f"{name}.csv"
        if path.is_file():
            for row in audioset_instrument.read_instrument_csv(path):
                tags = ("multi-source",) if row.multi else ()
                clips.append(_Clip(row.video_id, row.video_id, name, row.classes[0], tags=tags,
                                   window=(row.start, row.end)))
    if not clips:
        raise AvlocError(f"{source}: no train.csv, val.csv or test.csv")
    return clips


def _vggss_clips(source: Path, split: str, notes: list[str]) -> list[_Clip]:
    document = read_vggss_file(source)
    notes += document.summary()
    clips = []
    for entry in document.entries:
        frame = FrameAnnotation(0.0, tuple(map(tuple, entry.usable_boxes.tolist())), source_format="vggss",
                                source_boxes=tuple(map(tuple, entry.boxes.tolist())))  # every box, as written
        clips.append(_Clip(entry.file, entry.file, split, entry.label, frames=(frame,),
                           window=_vggss_window(entry.file)))
    return clips


def _flickr_clips(source: Path, split: str, notes: list[str]) -> list[_Clip]:
    files = sorted(source.glob("*.xml")) if source.is_dir() else []
    if not files:
        raise AvlocError(f"{source}: no Flickr-SoundNet .xml annotation files")
    clips, unread = [], []
    for path in files:
        annotation = read_flickr_xml(path)
        normalised = annotation.boxes_in(1, 1)  # (N, 4) in [0, 1]
        sources = {} if annotation.source_boxes is None else {"source_format": "flickr",
                                                              "source_boxes": annotation.source_boxes}
        frame = FrameAnnotation(0.0, tuple(tuple(b) for b in normalised), ground_truth="consensus", **sources)
        clips.append(_Clip(annotation.id, annotation.id, split, UNLABELLED, frames=(frame,)))
        if annotation.source_boxes is None:
            unread.append(annotation.id)
    if unread:
        notes.append(f"{len(unread)} Flickr files whose <bbox> elements the LVS / EZ-VSL scripts cannot read as four "
                     f"integers after the first child: no source_boxes ({_listed(unread)})")
    return clips


def _avatar_clips(source: Path, split: str, notes: list[str]) -> list[_Clip]:
    from avloc.data.formats.avatar import read_avatar_frame

    folders = sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
    clips = []
    for folder in folders:
        frames, keys, categories = [], [], Counter()
        for path in sorted(folder.glob("*.json")):
            annotated = read_avatar_frame(path)
            categories.update(o.category for o in annotated.objects if o.category)
            masks = ()
            if any(o.polygons for o in annotated.objects):
                masks = tuple(tuple(tuple(float(v) for v in p.reshape(-1)) for p in o.polygons)  # (P, 2) -> (2P,)
                              for o in annotated.objects)
            keys.append(_frame_key(path))
            frames.append(FrameAnnotation(0.0, tuple(o.box for o in annotated.objects),
                                          _avatar_scenario(annotated, path), masks))
        if frames:
            label = categories.most_common(1)[0][0] if categories else UNLABELLED
            clips.append(_Clip(folder.name, folder.name, split, label, frames=tuple(frames), frame_keys=tuple(keys)))
    if not clips:
        raise AvlocError(f"{source}: no <video id>/<frame>.json files (AVATAR layout)")
    return clips


def _frame_key(path: Path) -> int | float:
    """A frame file's stem: a frame index (int) or, with a decimal point, seconds (float)."""
    try:
        return float(path.stem) if "." in path.stem else int(path.stem)
    except ValueError:
        raise AvlocError(f"{path}: the file name must be a frame index or a time in seconds") from None


def _avatar_scenario(frame, path: Path) -> str:
    tasks = {o.task.strip().lower() for o in frame.objects if o.task}
    if not frame.objects:
        return "off-screen"
    if len(tasks) != 1 or next(iter(tasks)) not in AVATAR_SCENARIOS:
        raise AvlocError(f"{path}: expected one task of {', '.join(sorted(AVATAR_SCENARIOS))} per frame, "
                         f"got {sorted(tasks) or 'none'}")
    return AVATAR_SCENARIOS[next(iter(tasks))]
