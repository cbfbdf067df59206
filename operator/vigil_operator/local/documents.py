"""Reading Model YAML for `vigil local apply -f` (pure but for the file read).

The same files `kubectl apply -f` takes. One local convenience: an
artifact.uri that is a plain path (no scheme) names a file relative to the
YAML file's folder and becomes a `file:///` URI, so a model next to its
YAML works from any working directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

Obj = dict[str, Any]


class DocumentError(ValueError):
    """A file that holds no usable objects; the message names the file and the problem."""


def resolve_artifact(doc: Mapping[str, Any], base: Path) -> Obj:
    """A copy of `doc` whose schemeless artifact.uri is a file:/// URI against `base`."""
    out = dict(doc)
    spec = out.get("spec")
    if not isinstance(spec, Mapping):
        return out
    artifact = spec.get("artifact")
    if not isinstance(artifact, Mapping):
        return out
    uri = artifact.get("uri")
    if not isinstance(uri, str) or not uri.strip() or "://" in uri:
        return out
    path = Path(uri.strip()).expanduser()
    absolute = Path(os.path.abspath(path if path.is_absolute() else base / path))
    out["spec"] = {**spec, "artifact": {**artifact, "uri": absolute.as_uri()}}
    return out


def parse_documents(text: str, source: str, base: Path) -> list[Obj]:
    """Every object in a (multi-document) YAML text; `kind: List` is unpacked."""
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise DocumentError(f"{source}: not valid YAML: {exc}") from None
    docs: list[Obj] = []
    for i, doc in enumerate(loaded, 1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise DocumentError(f"{source}: document {i} is not an object")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            items = doc["items"]
        else:
            items = [doc]
        for item in items:
            if not isinstance(item, dict):
                raise DocumentError(f"{source}: document {i} holds an item that is not an object")
            docs.append(resolve_artifact(item, base))
    if not docs:
        raise DocumentError(f"{source}: no objects in it")
    return docs


def read_documents(path: str) -> list[Obj]:
    """The objects in a YAML file, or in standard input for `-`."""
    if path == "-":
        return parse_documents(sys.stdin.read(), "<stdin>", Path.cwd())
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(f"{path}: {exc.strerror or exc}") from None
    return parse_documents(text, path, file.absolute().parent)


def artifact_file(uri: str) -> str:
    """The local path of a file:/// URI (percent-escapes decoded)."""
    return unquote(uri.removeprefix("file://"))
