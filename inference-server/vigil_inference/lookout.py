"""Amazon Lookout for Vision datasets: Ground Truth manifests and the folder layout.

A manifest is JSON Lines, one image per line, as Lookout (and the SageMaker
algorithm AWS pointed its users to) read it:

    {"source-ref": "images/1.png", "anomaly-label": 1,
     "anomaly-label-metadata": {"class-name": "anomaly", ...},
     "anomaly-mask-ref": "masks/1.png",
     "anomaly-mask-ref-metadata": {"internal-color-map": {
         "0": {"class-name": "BACKGROUND", "hex-color": "#ffffff"},
         "1": {"class-name": "scratch", "hex-color": "#2ca02c"}}}}

References are local paths (relative to the manifest) or `file://` URIs.
Every line is checked before anything is trained, and every problem is
reported with its line number. Pure Python: no torch, so parsing is fast and
testable on its own.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg"})
BACKGROUND: Final = "background"  # the name Lookout's responses use
DEFAULT_BACKGROUND_COLOR: Final = "#FFFFFF"  # Ground Truth's BACKGROUND colour
COLOR_MAP_FILE: Final = "color-map.json"
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_MAX_REPORTED = 10


class DatasetError(ValueError):
    """The dataset cannot be used; the message names every problem found."""


@dataclass(frozen=True)
class AnomalyType:
    """A named anomaly type and its mask colour ("#RRGGBB", upper case)."""

    name: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        return hex_rgb(self.color)


@dataclass(frozen=True)
class Entry:
    """One labelled image; `mask` is a colour-coded PNG when the line has one."""

    image: Path
    anomalous: bool
    mask: Path | None = None
    where: str = ""  # "FILE:LINE" for messages


@dataclass(frozen=True)
class Dataset:
    entries: tuple[Entry, ...]
    types: tuple[AnomalyType, ...] = ()  # empty: no colour-coded masks
    background_color: str = DEFAULT_BACKGROUND_COLOR
    source: str = ""

    @property
    def normal(self) -> list[Path]:
        return [e.image for e in self.entries if not e.anomalous]

    @property
    def anomalous(self) -> list[Entry]:
        return [e for e in self.entries if e.anomalous]


def hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


class S3Reference(ValueError):
    """A reference into S3: collected per manifest into one message."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"{ref} is in S3")
        self.ref = ref


def s3_message(refs: Sequence[str], manifest: Path) -> str:
    """How to copy the referenced S3 folder locally and rewrite the manifest."""
    parts = [r.removeprefix("s3://").split("/")[:-1] for r in refs]
    common = parts[0]
    for p in parts[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    prefix = "/".join(common) + "/" if common else ""
    local = os.path.abspath(prefix or ".") + "/"
    target = manifest.with_name(f"{manifest.stem}.local{manifest.suffix}")
    return (
        f"{manifest}: {len(refs)} references are in S3 (first: {refs[0]}), which Vigil does "
        "not read. Copy them locally and point the manifest at the copy:\n"
        f"    aws s3 sync s3://{prefix} {local}\n"
        f"    sed 's#s3://{prefix}#{local}#g' {manifest} > {target}\n"
        f"then train with --manifest {target}"
    )


def resolve_ref(ref: Any, base: Path, manifest: Path, what: str) -> Path:
    """A manifest reference as a local path that exists; raises ValueError saying why not."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"{what} must be a non-empty string, got {ref!r}")
    if ref.startswith("s3://"):
        raise S3Reference(ref)
    if ref.startswith("file://"):
        parsed = urllib.parse.urlparse(ref)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{what} {ref}: file:// URIs must name a local file")
        path = Path(urllib.parse.unquote(parsed.path))
    elif "://" in ref:
        scheme = ref.split("://", 1)[0]
        raise ValueError(f"{what} {ref}: {scheme}:// is not supported (local paths or file://)")
    else:
        path = Path(ref)
    path = Path(os.path.abspath(base / path))  # base / absolute is the absolute path
    if not path.is_file():
        raise ValueError(f"{what} {ref}: no such file ({path})")
    return path


def _color_map(meta: Any) -> tuple[list[AnomalyType], str | None]:
    """(types, background colour) from `anomaly-mask-ref-metadata`."""
    if not isinstance(meta, dict) or not isinstance(meta.get("internal-color-map"), dict):
        raise ValueError("anomaly-mask-ref-metadata.internal-color-map must be an object")
    types: list[AnomalyType] = []
    background = None
    for key, item in meta["internal-color-map"].items():
        if not isinstance(item, dict):
            raise ValueError(f"internal-color-map[{key!r}] must be an object")
        name, color = item.get("class-name"), item.get("hex-color")
        if not isinstance(name, str) or not name:
            raise ValueError(f"internal-color-map[{key!r}] needs a class-name")
        if not isinstance(color, str) or not _HEX.match(color):
            raise ValueError(
                f"internal-color-map[{key!r}] ({name}): hex-color must be #RRGGBB, got {color!r}"
            )
        if name.lower() == BACKGROUND:
            background = color.upper()
        else:
            types.append(AnomalyType(name, color.upper()))
    if not types:
        raise ValueError("internal-color-map names no anomaly class besides BACKGROUND")
    return types, background


def _merge_types(
    known: dict[str, AnomalyType], new: Iterable[AnomalyType], background: str
) -> None:
    for t in new:
        old = known.get(t.name)
        if old is not None and old.color != t.color:
            raise ValueError(f"class {t.name} is {t.color} here but {old.color} on an earlier line")
        clash = next((k for k in known.values() if k.color == t.color and k.name != t.name), None)
        if clash is not None:
            raise ValueError(f"classes {clash.name} and {t.name} share the colour {t.color}")
        if t.color == background:
            raise ValueError(f"class {t.name} has the background's colour {t.color}")
        known[t.name] = t


def _parse_line(line: str, manifest: Path) -> tuple[Entry, list[AnomalyType], str | None]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    base = manifest.parent
    image = resolve_ref(obj.get("source-ref"), base, manifest, "source-ref")
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"source-ref {image.name}: only PNG and JPEG images are supported")
    label = obj.get("anomaly-label")
    if isinstance(label, bool) or label not in (0, 1):
        raise ValueError(f"anomaly-label must be 1 (anomaly) or 0 (normal), got {label!r}")
    if not isinstance(obj.get("anomaly-label-metadata"), dict):
        raise ValueError("anomaly-label-metadata must be an object (Lookout requires it)")
    mask = None
    types: list[AnomalyType] = []
    background = None
    if "anomaly-mask-ref" in obj:
        mask = resolve_ref(obj["anomaly-mask-ref"], base, manifest, "anomaly-mask-ref")
        if mask.suffix.lower() != ".png":
            raise ValueError(f"anomaly-mask-ref {mask.name}: masks must be PNG (exact colours)")
        types, background = _color_map(obj.get("anomaly-mask-ref-metadata"))
    elif "anomaly-mask-ref-metadata" in obj:
        raise ValueError("anomaly-mask-ref-metadata without anomaly-mask-ref")
    return Entry(image, label == 1, mask), types, background


def _finish(
    entries: list[Entry],
    known: dict[str, AnomalyType],
    background: str | None,
    errors: list[str],
    source: str,
) -> Dataset:
    if not errors and not entries:
        errors.append(f"{source}: no images")
    masked = [e for e in entries if e.mask is not None and e.anomalous]
    if not errors and masked and len(masked) < len([e for e in entries if e.anomalous]):
        missing = next(e for e in entries if e.anomalous and e.mask is None)
        errors.append(
            f"{missing.where}: anomalous image without anomaly-mask-ref, but other lines have "
            "masks (give every anomalous image a mask, or none)"
        )
    if errors:
        more = len(errors) - _MAX_REPORTED
        tail = [f"... and {more} more"] if more > 0 else []
        raise DatasetError("\n".join(errors[:_MAX_REPORTED] + tail))
    return Dataset(
        tuple(entries),
        tuple(sorted(known.values(), key=lambda t: t.name)),
        background or DEFAULT_BACKGROUND_COLOR,
        source,
    )


def read_manifest(path: str | Path) -> Dataset:
    """Parse and check every line; raises DatasetError listing the bad lines."""
    manifest = Path(path)
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read manifest {manifest}: {exc}") from exc
    entries: list[Entry] = []
    known: dict[str, AnomalyType] = {}
    background: str | None = None
    errors: list[str] = []
    s3: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{manifest}:{n}"
        try:
            entry, types, bg = _parse_line(line, manifest)
            if bg is not None:
                if background is not None and bg != background:
                    raise ValueError(f"BACKGROUND is {bg} here but {background} on an earlier line")
                background = bg
            _merge_types(known, types, background or DEFAULT_BACKGROUND_COLOR)
        except S3Reference as exc:
            s3.append(exc.ref)
            continue
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
            continue
        entries.append(Entry(entry.image, entry.anomalous, entry.mask, where))
    if s3:
        raise DatasetError(s3_message(s3, manifest))
    return _finish(entries, known, background, errors, str(manifest))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _folder_color_map(path: Path) -> tuple[list[AnomalyType], str | None]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(
            f'{path}: must map class names to colours, e.g. {{"scratch": "#2CA02C"}}'
        )
    as_gt = {str(i): {"class-name": k, "hex-color": v} for i, (k, v) in enumerate(raw.items())}
    try:
        return _color_map({"internal-color-map": as_gt})
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from exc


def read_folder(root: str | Path) -> Dataset:
    """Lookout's folder layout: `normal/` and `anomaly/` image folders; for
    segmentation, `masks/` beside them holding one PNG per anomalous image
    (same file stem) and `masks/color-map.json` ({"scratch": "#2CA02C", ...})."""
    root = Path(root)
    normal_dir, anomaly_dir, mask_dir = root / "normal", root / "anomaly", root / "masks"
    if not normal_dir.is_dir():
        raise DatasetError(f"{root}: no normal/ folder (Lookout's layout: normal/, anomaly/)")
    entries = [Entry(p, False, None, str(p)) for p in _images(normal_dir)]
    anomalous = _images(anomaly_dir) if anomaly_dir.is_dir() else []
    known: dict[str, AnomalyType] = {}
    background = None
    errors: list[str] = []
    if mask_dir.is_dir():
        cmap = mask_dir / COLOR_MAP_FILE
        if not cmap.is_file():
            raise DatasetError(
                f"{mask_dir}: masks need {COLOR_MAP_FILE} naming each colour's class"
            )
        types, background = _folder_color_map(cmap)
        _merge_types(known, types, background or DEFAULT_BACKGROUND_COLOR)
        for p in anomalous:
            mask = mask_dir / f"{p.stem}.png"
            if not mask.is_file():
                errors.append(f"{p}: no mask {mask}")
            entries.append(Entry(p, True, mask, str(p)))
    else:
        entries += [Entry(p, True, None, str(p)) for p in anomalous]
    return _finish(entries, known, background, errors, str(root))


def read_dataset(path: str | Path) -> Dataset:
    """A manifest file or a folder in Lookout's layout."""
    p = Path(path)
    if p.is_dir():
        return read_folder(p)
    if not p.exists():
        raise DatasetError(f"{p}: no such manifest file or folder")
    return read_manifest(p)


def read_datasets(paths: Sequence[str | Path]) -> tuple[Dataset, Dataset | None]:
    """(training, test or None) from one or two `--manifest` arguments. A
    folder holding `train/` and `test/` counts as both, as Lookout's projects
    had a training and a test dataset."""
    if len(paths) == 1 and Path(paths[0]).is_dir() and (Path(paths[0]) / "train").is_dir():
        root = Path(paths[0])
        test = read_folder(root / "test") if (root / "test").is_dir() else None
        return read_folder(root / "train"), test
    if not 1 <= len(paths) <= 2:
        raise DatasetError(f"give one or two --manifest (training, then test), got {len(paths)}")
    train = read_dataset(paths[0])
    test = read_dataset(paths[1]) if len(paths) == 2 else None
    if test is not None and test.types and train.types and test.types != train.types:
        names = ", ".join(f"{t.name} {t.color}" for t in test.types)
        raise DatasetError(f"{test.source}: its classes ({names}) differ from the training set's")
    return train, test
