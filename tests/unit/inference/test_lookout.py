"""Lookout for Vision manifests and folders: what is read, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vigil_inference.lookout import (
    AnomalyType,
    DatasetError,
    read_dataset,
    read_datasets,
    read_folder,
    read_manifest,
)

COLOR_MAP = {
    "0": {"class-name": "BACKGROUND", "hex-color": "#ffffff", "confidence": 0.0},
    "1": {"class-name": "scratch", "hex-color": "#2ca02c", "confidence": 0.0},
    "2": {"class-name": "dent", "hex-color": "#1f77b4", "confidence": 0.0},
}
LABEL_META = {"class-name": "anomaly", "type": "groundtruth/image-classification"}


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """images/{n0,n1,a0}.png and masks/a0.png under tmp_path."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = np.full((64, 64, 3), 128, dtype=np.uint8)
    for name in ("n0", "n1", "a0"):
        Image.fromarray(img).save(tmp_path / "images" / f"{name}.png")
    Image.fromarray(np.full((64, 64, 3), 255, dtype=np.uint8)).save(tmp_path / "masks" / "a0.png")
    return tmp_path


def line(source: str, label: int = 0, mask: str | None = None, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "source-ref": source,
        "anomaly-label": label,
        "anomaly-label-metadata": LABEL_META,
    }
    if mask is not None:
        obj["anomaly-mask-ref"] = mask
        obj["anomaly-mask-ref-metadata"] = {
            "internal-color-map": COLOR_MAP,
            "type": "groundtruth/semantic-segmentation",
        }
    obj.update(extra)
    return obj


def write(path: Path, *lines: dict[str, Any] | str) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_segmentation_manifest_reads_labels_masks_and_the_color_map(files: Path) -> None:
    sub = files / "manifests"
    sub.mkdir()
    manifest = write(
        sub / "train.manifest",
        line("../images/n0.png"),  # relative to the manifest's folder
        line((files / "images" / "n1.png").as_uri()),  # file://
        line("../images/a0.png", 1, mask=str(files / "masks" / "a0.png")),  # absolute
    )
    ds = read_manifest(manifest)
    assert ds.normal == [files / "images" / "n0.png", files / "images" / "n1.png"]
    [anomaly] = ds.anomalous
    assert anomaly.image == files / "images" / "a0.png"
    assert anomaly.mask == files / "masks" / "a0.png"
    assert ds.types == (AnomalyType("dent", "#1F77B4"), AnomalyType("scratch", "#2CA02C"))
    assert ds.background_color == "#FFFFFF"


def test_classification_manifest_has_no_types(files: Path) -> None:
    ds = read_manifest(write(files / "m", line("images/n0.png"), line("images/a0.png", 1)))
    assert ds.types == () and len(ds.anomalous) == 1


def test_s3_references_say_how_to_sync_and_rewrite(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files)
    manifest = write(
        files / "train.manifest",
        line("s3://my-bucket/export/train/normal/n0.png"),
        line("s3://my-bucket/export/train/anomaly/a0.png", 1),
    )
    with pytest.raises(DatasetError) as err:
        read_manifest(manifest)
    message = str(err.value)
    local = f"{files}/my-bucket/export/train/"
    assert f"aws s3 sync s3://my-bucket/export/train/ {local}" in message
    rewrite = f"sed 's#s3://my-bucket/export/train/#{local}#g' {manifest} > "
    assert rewrite + f"{files}/train.local.manifest" in message


def test_every_bad_line_is_reported_with_its_number(files: Path) -> None:
    manifest = write(
        files / "bad.manifest",
        line("images/n0.png"),
        "{not json",
        line("images/missing.png"),
        line("images/n1.png", label=2),
        json.dumps({"source-ref": "images/n1.png", "anomaly-label": 0}),
        "",
        line("images/a0.png", 1, mask="masks/a0.png", **{"anomaly-mask-ref-metadata": {}}),
        line("http://example.com/x.png"),
    )
    with pytest.raises(DatasetError) as err:
        read_manifest(manifest)
    lines = str(err.value).splitlines()
    assert [x.split(":")[1] for x in lines] == ["2", "3", "4", "5", "7", "8"]
    assert "not valid JSON" in lines[0]
    assert "no such file" in lines[1]
    assert "anomaly-label must be 1 (anomaly) or 0 (normal), got 2" in lines[2]
    assert "anomaly-label-metadata must be an object" in lines[3]
    assert "internal-color-map must be an object" in lines[4]
    assert "http:// is not supported" in lines[5]


def test_conflicting_colors_across_lines_are_refused(files: Path) -> None:
    other = {**COLOR_MAP, "1": {"class-name": "scratch", "hex-color": "#ff0000"}}
    second = line("images/a0.png", 1, mask="masks/a0.png")
    second["anomaly-mask-ref-metadata"] = {"internal-color-map": other}
    manifest = write(files / "m", line("images/a0.png", 1, mask="masks/a0.png"), second)
    with pytest.raises(DatasetError, match=r"m:2: class scratch is #FF0000 here but #2CA02C"):
        read_manifest(manifest)


def test_anomalies_must_all_have_masks_or_none(files: Path) -> None:
    manifest = write(
        files / "m", line("images/a0.png", 1, mask="masks/a0.png"), line("images/n1.png", 1)
    )
    with pytest.raises(DatasetError, match=r"m:2: anomalous image without anomaly-mask-ref"):
        read_manifest(manifest)


def test_empty_manifest_is_refused(files: Path) -> None:
    with pytest.raises(DatasetError, match="no images"):
        read_manifest(write(files / "m", ""))


def make_folder(root: Path, masks: bool = True) -> Path:
    for sub in ("normal", "anomaly", *(["masks"] if masks else [])):
        (root / sub).mkdir(parents=True)
    img = np.full((64, 64, 3), 128, dtype=np.uint8)
    for name in ("n0", "n1"):
        Image.fromarray(img).save(root / "normal" / f"{name}.png")
    Image.fromarray(img).save(root / "anomaly" / "a0.jpg")
    if masks:
        Image.fromarray(img).save(root / "masks" / "a0.png")
        (root / "masks" / "color-map.json").write_text('{"scratch": "#2ca02c", "dent": "#1F77B4"}')
    return root


def test_folder_layout_with_masks_beside_the_images(tmp_path: Path) -> None:
    ds = read_folder(make_folder(tmp_path / "p"))
    assert [p.name for p in ds.normal] == ["n0.png", "n1.png"]
    [a] = ds.anomalous
    assert a.image.name == "a0.jpg" and a.mask == tmp_path / "p" / "masks" / "a0.png"
    assert [t.name for t in ds.types] == ["dent", "scratch"]


def test_folder_without_masks_is_a_classification_dataset(tmp_path: Path) -> None:
    ds = read_dataset(make_folder(tmp_path / "p", masks=False))
    assert ds.types == () and len(ds.anomalous) == 1


def test_folder_refusals_name_the_problem(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "p")
    (root / "masks" / "a0.png").unlink()
    with pytest.raises(DatasetError, match=r"a0.jpg: no mask .*masks/a0.png"):
        read_folder(root)
    (root / "masks" / "color-map.json").unlink()
    with pytest.raises(DatasetError, match=r"masks need color-map\.json"):
        read_folder(root)
    with pytest.raises(DatasetError, match="no normal/ folder"):
        read_folder(tmp_path)


def test_train_and_test_folders_are_both_sets(tmp_path: Path) -> None:
    make_folder(tmp_path / "proj" / "train")
    make_folder(tmp_path / "proj" / "test")
    train, test = read_datasets([tmp_path / "proj"])
    assert test is not None
    assert train.source.endswith("train") and test.source.endswith("test")


def test_more_than_two_manifests_is_a_usage_error(files: Path) -> None:
    m = write(files / "m", line("images/n0.png"))
    with pytest.raises(DatasetError, match="one or two --manifest"):
        read_datasets([m, m, m])


def test_a_mask_without_class_colours_is_refused_before_training(files: Path) -> None:
    from vigil_inference.lookout_train import plan

    train = write(
        files / "train.manifest", line("images/n0.png"), line("images/a0.png", 1, "masks/a0.png")
    )
    test = write(
        files / "test.manifest", line("images/n1.png"), line("images/a0.png", 1, "masks/a0.png")
    )
    with pytest.raises(
        DatasetError, match=r"train.manifest:2: .*a0.png: no pixel has a class colour"
    ):
        plan(*read_datasets([train, test]), seed=0)
