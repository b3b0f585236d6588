"""Caption-only readers for the concept pool (paper §3.1): COCO captions JSON, text files, webdataset shards.

Each reader yields one caption string per sample, streaming (a text file or a shard is never held in memory
whole; a COCO JSON file is parsed once). A malformed *file* (not UTF-8, not JSON, no ``annotations``, a
caption that is not a string, an unreadable tar) raises :class:`~regionclip.errors.DataError` naming it; a
bad *sample* inside a shard (no ``txt`` member and no usable ``json`` caption) is skipped and counted.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from regionclip.errors import DataError

CAPTION_SUFFIXES = (".json", ".txt", ".tar")


@dataclass
class CaptionStats:
    """Running counts of the captions read and of the shard samples skipped (no usable caption)."""

    read: int = 0
    skipped: int = 0


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files of ``inputs``: a folder stands for its ``.json``/``.txt``/``.tar`` files (sorted, not recursive)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CAPTION_SUFFIXES)
            if not found:
                raise DataError(f"{path}: folder has no caption files ({', '.join(CAPTION_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"caption input not found: {path}")
    return files


def read_coco_captions(path: str | Path) -> Iterator[str]:
    """Captions of a COCO captions JSON (``{"annotations": [{"caption": str, ...}, ...]}``)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: expected a COCO captions JSON with an 'annotations' list")
    for i, ann in enumerate(data["annotations"]):
        caption = ann.get("caption") if isinstance(ann, dict) else None
        if not isinstance(caption, str):
            raise DataError(
                f"{path}: annotations[{i}].caption is {type(caption).__name__}, expected a string"
            )
        yield caption


def read_text_captions(path: str | Path) -> Iterator[str]:
    """Captions of a text file, one a line (UTF-8; blank lines are ignored)."""
    path = Path(path)
    found = False
    with open(path, encoding="utf-8") as f:
        line_no = 0
        try:
            for line_no, line in enumerate(f, 1):  # noqa: B007 - line_no is reported on a decode error
                if line.strip():
                    found = True
                    yield line.strip()
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text (after line {line_no}, byte {err.start})") from None
    if not found:
        raise DataError(f"{path}: no captions (the file is empty)")


def _shard_caption(members: dict[str, bytes]) -> str | None:
    """The caption of one webdataset sample: its ``txt`` member, else its ``json`` member's caption(s)."""
    for ext, data in members.items():
        if ext == "txt" or ext.endswith(".txt"):
            try:
                text = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                return None
            return text or None
    for ext, data in members.items():
        if ext == "json" or ext.endswith(".json"):
            try:
                meta = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return None
            if not isinstance(meta, dict):
                return None
            caption = meta.get("caption", meta.get("captions"))
            if isinstance(caption, list):
                caption = next((c for c in caption if isinstance(c, str) and c.strip()), None)
            return caption.strip() if isinstance(caption, str) and caption.strip() else None
    return None


def read_shard_captions(path: str | Path, stats: CaptionStats | None = None) -> Iterator[str]:
    """Captions of a webdataset tar shard, streamed; samples without a usable caption are counted in
    ``stats.skipped``. Samples are the runs of members sharing a key (the name up to the first dot)."""
    path = Path(path)
    stats = stats if stats is not None else CaptionStats()
    key, members = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                name = info.name
                base = name.rsplit("/", 1)[-1]
                dot = base.find(".")
                sample_key = name[: len(name) - len(base) + dot] if dot >= 0 else name
                ext = base[dot + 1 :].lower() if dot >= 0 else ""
                if sample_key != key:
                    if key is not None:
                        caption = _shard_caption(members)
                        if caption is None:
                            stats.skipped += 1
                        else:
                            yield caption
                    key, members = sample_key, {}
                if ext == "txt" or ext == "json" or ext.endswith((".txt", ".json")):
                    members[ext] = tar.extractfile(info).read()
                else:
                    members.setdefault(ext, b"")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{path}: not a readable tar shard ({err})") from None
    if key is not None:
        caption = _shard_caption(members)
        if caption is None:
            stats.skipped += 1
        else:
            yield caption


def read_captions(path: str | Path, stats: CaptionStats | None = None) -> Iterator[str]:
    """Captions of one file, by its suffix: ``.json`` COCO captions, ``.tar`` shard, anything else text."""
    path = Path(path)
    if path.suffix == ".json":
        return read_coco_captions(path)
    if path.suffix == ".tar":
        return read_shard_captions(path, stats)
    return read_text_captions(path)


def iter_captions(
    inputs: Sequence[str | Path], stats: CaptionStats | None = None, max_captions: int | None = None
) -> Iterator[str]:
    """Captions of all ``inputs`` (files or folders) in order, at most ``max_captions``; counts in ``stats``."""
    stats = stats if stats is not None else CaptionStats()
    files = expand_inputs(inputs)
    if max_captions is not None and max_captions <= 0:
        return
    for path in files:
        for caption in read_captions(path, stats):
            stats.read += 1
            yield caption
            if max_captions is not None and stats.read >= max_captions:
                return
