"""Media files below a folder, found by name: how every importer finds a clip's video.

Datasets name their clips by an id (a YouTube id, a VGGSound ``<id>_<start>``, a Flickr
number); the files are ``<id>.<suffix>`` anywhere below the folder the user points at.
"""

from __future__ import annotations

import os
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg")
MEDIA_KINDS = {"video": VIDEO_SUFFIXES, "image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}


def find_media(folder: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """``{stem: {kind: path}}`` for every video, image and audio file below ``folder``.

    Files are visited in sorted order; the first of a kind with a given stem wins.
    """
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(folder).rglob("*")):
        kind = next((k for k, suffixes in MEDIA_KINDS.items() if path.suffix.lower() in suffixes), None)
        if kind is not None and path.is_file():
            found.setdefault(path.stem, {}).setdefault(kind, path)
    return found


def find_videos(folder: str | os.PathLike) -> dict[str, Path]:
    """``{stem: path}`` of the videos below ``folder``."""
    return {stem: kinds["video"] for stem, kinds in find_media(folder).items() if "video" in kinds}
