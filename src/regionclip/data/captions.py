"""Caption-only readers for the concept pool (paper §3.1): COCO captions JSON, text files, webdataset shards.

Each reader yields one caption string per sample, streaming (a text file or a shard is never held in memory
whole; a COCO JSON file is parsed once). A malformed *file* (not UTF-8, not JSON, no ``annotations``, a
caption that is not a string, an unreadable tar) raises :class:`~regionclip.errors.DataError` naming it; a
bad *sample* inside a shard (no ``txt`` member and no usable ``json`` caption) is skipped and counted.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator, Sequence
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


def split_sample_key(name: str) -> tuple[str, str]:
    """webdataset naming: ``dir/KEY.ext.more`` -> (``dir/KEY``, ``ext.more``), split at the basename's first dot."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :].lower()


def caption_member(exts: Iterable[str], kind: str) -> str | None:
    """The extension of a sample's ``kind`` member (``json`` or ``txt``): ``kind`` itself, else ``*.kind``."""
    exts = list(exts)
    if kind in exts:
        return kind
    return next((e for e in exts if e.endswith("." + kind)), None)


def parse_sample_captions(json_data: bytes | None, txt_data: bytes | None) -> list[str]:
    """The captions of one webdataset sample, stripped and non-empty: its ``json`` member's ``captions``
    (list) or ``caption``, else its ``txt`` member. ``[]`` when neither holds a usable caption (not UTF-8,
    not JSON, not a string). One rule for the concept pool and for pretraining."""
    if json_data is not None:
        try:
            meta = json.loads(json_data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if isinstance(meta, dict):
            for field in ("captions", "caption"):
                found = meta.get(field)
                found = found if isinstance(found, list) else [found]
                captions = [c.strip() for c in found if isinstance(c, str) and c.strip()]
                if captions:
                    return captions
    if txt_data is not None:
        try:
            text = txt_data.decode("utf-8").strip()
        except UnicodeDecodeError:
            return []
        return [text] if text else []
    return []


def _member_captions(members: dict[str, bytes]) -> list[str]:
    json_ext, txt_ext = caption_member(members, "json"), caption_member(members, "txt")
    return parse_sample_captions(members.get(json_ext), members.get(txt_ext))


def read_shard_captions(path: str | Path, stats: CaptionStats | None = None) -> Iterator[str]:
    """Captions of a webdataset tar shard, streamed (all of a sample's captions, by
    :func:`parse_sample_captions`); samples without a usable caption are counted in ``stats.skipped``.
    Samples are the runs of members sharing a key (the name up to the basename's first dot)."""
    path = Path(path)
    stats = stats if stats is not None else CaptionStats()
    key, members = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                sample_key, ext = split_sample_key(info.name)
                if sample_key != key:
                    if key is not None:
                        yield from _counted(_member_captions(members), stats)
                    key, members = sample_key, {}
                is_caption = ext in ("txt", "json") or ext.endswith((".txt", ".json"))
                members[ext] = tar.extractfile(info).read() if is_caption else b""
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{path}: not a readable tar shard ({err})") from None
    if key is not None:
        yield from _counted(_member_captions(members), stats)


def _counted(captions: list[str], stats: CaptionStats) -> list[str]:
    if not captions:
        stats.skipped += 1
    return captions


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
