"""Reading Model YAML for `vigil local apply -f`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vigil_operator.local.documents import (
    DocumentError,
    artifact_file,
    parse_documents,
    read_documents,
)

MODEL = """\
apiVersion: vigil.dev/v1alpha1
kind: Model
metadata: {{name: {name}}}
spec:
  artifact: {{uri: {uri}}}
"""


def uri_of(doc: dict[str, object]) -> str:
    return doc["spec"]["artifact"]["uri"]  # type: ignore[index, no-any-return]


def test_a_plain_path_is_relative_to_the_yaml_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my models"
    folder.mkdir()
    (folder / "model.yaml").write_text(MODEL.format(name="a", uri="v1/fabric.vigil"))
    (doc,) = read_documents(str(folder / "model.yaml"))
    assert uri_of(doc) == (folder / "v1" / "fabric.vigil").as_uri()
    assert uri_of(doc).startswith("file:///")
    assert artifact_file(uri_of(doc)) == str(folder / "v1" / "fabric.vigil")


def test_absolute_paths_and_uris_are_kept_as_uris(tmp_path: Path) -> None:
    docs = parse_documents(
        MODEL.format(name="a", uri="/srv/m.vigil")
        + "---\n"
        + MODEL.format(name="b", uri="file:///srv/m.vigil")
        + "---\n"
        + MODEL.format(name="c", uri="pvc://models/m.vigil"),
        "m.yaml",
        tmp_path,
    )
    assert [uri_of(d) for d in docs] == [
        "file:///srv/m.vigil",
        "file:///srv/m.vigil",
        "pvc://models/m.vigil",
    ]


def test_lists_and_empty_documents(tmp_path: Path) -> None:
    text = "---\n---\napiVersion: v1\nkind: List\nitems:\n  - {kind: Model}\n  - {kind: Model}\n"
    assert len(parse_documents(text, "l.yaml", tmp_path)) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spec: [unclosed", "l.yaml: not valid YAML"),
        ("- a\n- b\n", "l.yaml: document 1 is not an object"),
        ("---\n", "l.yaml: no objects in it"),
    ],
)
def test_unusable_files_are_refused_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(DocumentError, match=re.escape(message)):
        parse_documents(text, "l.yaml", tmp_path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match=r"nope\.yaml: No such file"):
        read_documents(str(tmp_path / "nope.yaml"))
