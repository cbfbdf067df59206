"""The `.vigil` artifact: a safetensors file whose metadata holds the model's
JSON description and a sha256 of its tensors.

safetensors is a flat header plus raw tensor bytes, so loading never runs
code (no pickle). Every refusal names the problem: not a safetensors file,
truncated, a foreign safetensors file, an unsupported format version, or
tensors that do not match their checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

FORMAT: Final = "vigil.patchcore"
FORMAT_VERSION: Final = 1
METADATA_KEY: Final = "vigil"
_MAX_HEADER: Final = 16 * 1024 * 1024
_REQUIRED: Final = (
    "format",
    "format_version",
    "model_version",
    "created_at",
    "backbone",
    "feature_layers",
    "input_size",
    "threshold",
    "score_scale",
    "blur_sigma",
    "training",
    "tensors_sha256",
)


class ArtifactError(ValueError):
    """The file is not a usable .vigil artifact; the message says why."""


@dataclass(frozen=True)
class Artifact:
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def sha256(self) -> str:
        return str(self.meta["tensors_sha256"])


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and bytes, independent of file layout."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_artifact(path: str | Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """Write atomically (temp file + rename); returns the tensors' sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    full = {
        **meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensors_sha256": tensors_sha256(tensors),
    }
    missing = [k for k in _REQUIRED if k not in full]
    if missing:
        raise ArtifactError(f"cannot save: metadata lacks {', '.join(missing)}")
    data = st_save(tensors, metadata={METADATA_KEY: json.dumps(full, sort_keys=True)})
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        # mkstemp makes it 0600: the unit image runs as uid 65532 and must read
        # an artifact mounted from its trainer's disk, so give it the mode open()
        # would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(full["tensors_sha256"])


def _header(data: bytes, name: str) -> dict[str, Any]:
    if len(data) < 8:
        raise ArtifactError(f"{name}: not a .vigil artifact ({len(data)} bytes, no header)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        raise ArtifactError(f"{name}: not a .vigil artifact (no safetensors header)")
    if 8 + n > len(data):
        raise ArtifactError(
            f"{name}: truncated: the header needs {n} bytes but the file has {len(data) - 8}"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{name}: not a .vigil artifact (unreadable header: {exc})") from exc
    if not isinstance(header, dict):
        raise ArtifactError(f"{name}: not a .vigil artifact (header is not an object)")
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    body = len(data) - 8 - n
    if ends and max(ends) > body:
        raise ArtifactError(
            f"{name}: truncated: tensors need {max(ends)} bytes but the file has {body}"
        )
    return header


def parse_artifact(data: bytes, name: str = "artifact") -> Artifact:
    header = _header(data, name)
    raw_meta = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw_meta is None:
        raise ArtifactError(
            f"{name}: a safetensors file without Vigil metadata, not a .vigil artifact"
        )
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{name}: Vigil metadata is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(
            f"{name}: foreign artifact format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{name}: artifact format version {version!r} is not supported "
            f"(this Vigil reads version {FORMAT_VERSION}); retrain or upgrade Vigil"
        )
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ArtifactError(f"{name}: metadata lacks {', '.join(missing)}")
    try:
        tensors = st_load(data)
    except Exception as exc:
        raise ArtifactError(f"{name}: corrupt tensor data: {exc}") from exc
    actual = tensors_sha256(tensors)
    if actual != meta["tensors_sha256"]:
        raise ArtifactError(
            f"{name}: checksum mismatch: tensors hash to {actual[:12]}… but the metadata says "
            f"{str(meta['tensors_sha256'])[:12]}… (file corrupted or altered)"
        )
    return Artifact(meta, tensors)


def load_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc.strerror or exc}") from exc
    return parse_artifact(data, str(path))
