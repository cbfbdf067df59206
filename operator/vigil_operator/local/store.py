"""The local runtime's Models, kept as the API server keeps them.

`apply` refuses what `kubectl apply` would refuse: the CRD's schema and CEL
rules run through `core.crd.ModelValidator`, with the CRD's own messages.
Accepted objects get the schema's defaults, a uid, a creationTimestamp and a
generation that moves when the spec changes. With a state file the Models
(and their last status) survive a restart of `vigil local up`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import yaml

from vigil_operator.core.crd import ModelValidator
from vigil_operator.core.spec import SpecError, parse_artifact_uri
from vigil_operator.core.status import format_time

API_VERSION: Final = "vigil.dev/v1alpha1"
KIND: Final = "Model"
DEFAULT_NAMESPACE: Final = "default"
CRD_FILE: Final = "models.vigil.dev.yaml"
_NAMESPACE_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MSG_LOCAL_ARTIFACT: Final = (
    "the local runtime serves file:///PATH artifacts (or a path relative to the YAML file); "
    "pvc:// and http(s):// artifacts need a cluster"
)

Key = tuple[str, str]  # (namespace, name)
Obj = dict[str, Any]


class Invalid(ValueError):
    """A Model the store refuses; `errors` are the reasons, "path: message"."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


def crd_path() -> Path:
    """The CRD, shipped as the package's data (`vigil_operator/crds/`, a link to
    the repository's crds/ in the source tree)."""
    return Path(__file__).resolve().parents[1] / "crds" / CRD_FILE


def load_validator(path: Path | None = None) -> ModelValidator:
    path = path or crd_path()
    try:
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuntimeError(
            f"cannot read the Model CRD at {path} ({exc.strerror}); reinstall vigil"
        ) from None
    return ModelValidator(crd)


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or DEFAULT_NAMESPACE), str(meta.get("name") or "")


def _without_status(obj: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in obj.items() if k != "status"}


class ModelStore:
    def __init__(self, validator: ModelValidator, path: Path | None = None) -> None:
        self.validator = validator
        self.path = path
        self._objects: dict[Key, Obj] = {}

    def __iter__(self) -> Iterator[Obj]:
        return iter([self._objects[k] for k in sorted(self._objects)])

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, key: Key) -> Obj | None:
        return self._objects.get(key)

    def check(self, obj: Mapping[str, Any], namespace: str = DEFAULT_NAMESPACE) -> Obj:
        """The object as it would be stored (defaults applied), or `Invalid`."""
        api, kind = obj.get("apiVersion"), obj.get("kind")
        if api != API_VERSION or kind != KIND:
            raise Invalid(
                f'no matches for kind "{kind}" in version "{api}": this runtime hosts '
                f"{KIND} objects of {API_VERSION}"
            )
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            raise Invalid("metadata.name is required")
        name = meta["name"]
        ns = meta.get("namespace") or namespace
        if not isinstance(ns, str) or len(ns) > 63 or not _NAMESPACE_RE.match(ns):
            raise Invalid(f"metadata.namespace {ns!r} is not a DNS-1123 label")
        candidate: Obj = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": ns},
        }
        for extra in ("labels", "annotations"):
            if isinstance(meta.get(extra), Mapping):
                candidate["metadata"][extra] = dict(meta[extra])
        candidate.update({k: copy.deepcopy(v) for k, v in obj.items() if k not in candidate})
        candidate.pop("status", None)  # written by the runtime only, as the API server does
        old = self._objects.get((ns, name))
        errors = self.validator.errors(candidate, _without_status(old) if old else None)
        if errors:
            raise Invalid(f'The Model "{name}" is invalid: {"; ".join(errors)}', errors)
        stored = self.validator.default(candidate)
        try:
            artifact = parse_artifact_uri(stored["spec"]["artifact"]["uri"])
        except SpecError as exc:  # the CRD already checks this; kept for an older CRD
            raise Invalid(f'The Model "{name}" is invalid: {exc}') from None
        if artifact.kind != "file":
            msg = f"spec.artifact.uri: {MSG_LOCAL_ARTIFACT}"
            raise Invalid(f'The Model "{name}" is invalid: {msg}', [msg])
        return stored

    def apply(
        self, obj: Mapping[str, Any], *, now: datetime, namespace: str = DEFAULT_NAMESPACE
    ) -> tuple[str, Obj]:
        """Create or update; returns ("created" | "configured" | "unchanged", object)."""
        new = self.check(obj, namespace)
        key = key_of(new)
        old = self._objects.get(key)
        if old is None:
            new["metadata"].update(
                uid=str(uuid.uuid4()), creationTimestamp=format_time(now), generation=1
            )
            self._objects[key] = new
            self.save()
            return "created", new
        same_meta = all(
            old["metadata"].get(k) == new["metadata"].get(k) for k in ("labels", "annotations")
        )
        if old.get("spec") == new.get("spec") and same_meta:
            return "unchanged", old
        meta = old["metadata"]
        for k in ("labels", "annotations"):
            if k in new["metadata"]:
                meta[k] = new["metadata"][k]
            else:
                meta.pop(k, None)
        if old.get("spec") != new.get("spec"):
            meta["generation"] = int(meta.get("generation") or 1) + 1
            old["spec"] = new["spec"]
        self.save()
        return "configured", old

    def set_status(self, key: Key, status: Mapping[str, Any]) -> None:
        obj = self._objects.get(key)
        if obj is not None:
            obj["status"] = dict(status)

    def delete(self, key: Key) -> Obj | None:
        obj = self._objects.pop(key, None)
        if obj is not None:
            self.save()
        return obj

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self), indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def load(self) -> list[str]:
        """Restore saved Models; returns a warning per object that no longer validates."""
        if self.path is None or not self.path.exists():
            return []
        warnings = []
        for obj in json.loads(self.path.read_text(encoding="utf-8")):
            try:
                self.check(obj)
            except Invalid as exc:
                warnings.append(f"{'/'.join(key_of(obj))}: not restored: {exc}")
                continue
            self._objects[key_of(obj)] = obj
        return warnings
