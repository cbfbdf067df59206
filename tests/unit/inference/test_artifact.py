"""The .vigil artifact round-trips, and every bad file is refused by name."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from vigil_inference.artifact import (
    FORMAT,
    ArtifactError,
    load_artifact,
    parse_artifact,
    save_artifact,
    tensors_sha256,
)

META = {
    "model_version": "v1",
    "created_at": "2026-11-23T00:00:00+00:00",
    "backbone": "mobilenet_v2",
    "feature_layers": ["features.6", "features.13"],
    "input_size": [224, 224],
    "threshold": 1.5,
    "score_scale": 0.1,
    "blur_sigma": 4.0,
    "training": {"f1": 1.0},
}


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "memory_bank": torch.randn(32, 128, generator=g),
        "backbone.0.num_batches_tracked": torch.tensor(3),
    }


@pytest.fixture
def saved(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "m.vigil"
    save_artifact(path, META, tensors)
    return path


def test_round_trip_keeps_tensors_and_metadata(
    saved: Path, tensors: dict[str, torch.Tensor]
) -> None:
    art = load_artifact(saved)
    assert set(art.tensors) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(art.tensors[k], v)
    assert art.meta["threshold"] == 1.5 and art.meta["format"] == FORMAT
    assert art.sha256 == tensors_sha256(tensors)


def test_tampered_tensor_bytes_are_refused(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last tensor's data
    saved.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(saved)


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (0, r"not a \.vigil artifact \(0 bytes"),
        (5, r"not a \.vigil artifact \(5 bytes"),
        (100, "truncated: the header needs"),
        (-20, "truncated: tensors need"),
    ],
)
def test_truncated_file_is_refused(saved: Path, keep: int, message: str) -> None:
    saved.write_bytes(saved.read_bytes()[:keep])
    with pytest.raises(ArtifactError, match=message):
        load_artifact(saved)


def test_foreign_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    path.write_bytes(st_save({"w": torch.zeros(2)}, metadata={"format": "pt"}))
    with pytest.raises(ArtifactError, match="without Vigil metadata"):
        load_artifact(path)


def test_other_format_and_version_are_refused(tensors: dict[str, torch.Tensor]) -> None:
    for meta, message in [
        ({"format": "acme.model"}, "foreign artifact format"),
        ({"format": FORMAT, "format_version": 99}, "version 99 is not supported"),
    ]:
        full = {**META, "tensors_sha256": tensors_sha256(tensors), **meta}
        data = st_save(tensors, metadata={"vigil": json.dumps(full)})
        with pytest.raises(ArtifactError, match=message):
            parse_artifact(data)


def test_missing_metadata_field_is_named(tensors: dict[str, torch.Tensor]) -> None:
    full = {
        **META,
        "format": FORMAT,
        "format_version": 1,
        "tensors_sha256": tensors_sha256(tensors),
    }
    del full["threshold"]
    with pytest.raises(ArtifactError, match="lacks threshold"):
        parse_artifact(st_save(tensors, metadata={"vigil": json.dumps(full)}))


def test_random_bytes_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.vigil"
    junk.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 50)
    with pytest.raises(ArtifactError, match=r"not a \.vigil artifact \(unreadable header"):
        load_artifact(junk)
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        load_artifact(tmp_path / "absent.vigil")


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch PWNED",))


def test_a_pickle_is_refused_without_running_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.vigil"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ArtifactError):
        load_artifact(path)
    assert not (tmp_path / "PWNED").exists()


def test_save_is_atomic_and_leaves_no_temp_files(saved: Path) -> None:
    assert [p.name for p in saved.parent.iterdir()] == ["m.vigil"]


def test_saved_artifact_is_readable_by_other_users(
    tmp_path: Path, tensors: dict[str, torch.Tensor]
) -> None:
    """An artifact trained as one user is served by the image's uid 65532."""
    umask = os.umask(0o022)
    try:
        save_artifact(tmp_path / "m.vigil", META, tensors)
    finally:
        os.umask(umask)
    assert (tmp_path / "m.vigil").stat().st_mode & 0o777 == 0o644
