"""PATCH bodies by content type, as the API server applies them.

- ``application/merge-patch+json``: RFC 7386 (what kopf sends).
- ``application/strategic-merge-patch+json`` (``kubernetes_asyncio``'s default
  for built-in kinds with a dict body): applied as a merge patch. Lists are
  replaced, not merged by key (``containers`` by ``name``); ``$patch``-style
  directives are refused, so a test never passes by accident on them.
- ``application/json-patch+json``: RFC 6902; a failed ``test`` op is a 422,
  which kopf relies on for its optimistic ``/metadata/resourceVersion`` tests.
- ``application/apply-patch+yaml`` (server-side apply, helm 4's default):
  the applied configuration is merged into the object, or creates it. No
  managedFields: fields a manager stops applying are kept, and there are no
  ownership conflicts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import yaml

from . import errors
from .resources import ResourceType

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def is_apply(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == APPLY


def parse_apply(data: Any, raw: bytes) -> dict[str, Any]:
    """The applied configuration: JSON (what client-go sends) or YAML."""
    if data is None and raw:
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise errors.bad_request(f"error decoding YAML: {e}") from e
    if not isinstance(data, dict):
        raise errors.bad_request("an apply patch must be an object")
    return data


def apply_configuration(current: dict[str, Any], applied: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply without field ownership: a merge that keeps the object's identity."""
    md = {k: v for k, v in (applied.get("metadata") or {}).items() if k != "resourceVersion"}
    result: dict[str, Any] = merge_patch(current, {**applied, "metadata": md})
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _directives(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(str(k).startswith("$") or _directives(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_directives(v) for v in value)
    return False


def apply_patch(
    rt: ResourceType, name: str, obj: dict[str, Any], body: Any, content_type: str
) -> dict[str, Any]:
    """The object after the patch; raises ApiError the way the API server would."""
    media = content_type.split(";")[0].strip().lower()
    if media in (MERGE, STRATEGIC):
        if not isinstance(body, Mapping):
            raise errors.bad_request(
                f"error decoding patch: json: cannot unmarshal {type(body).__name__} "
                "into Go value of type map[string]interface {}"
            )
        if media == STRATEGIC and _directives(body):
            raise errors.bad_request(
                "strategic merge patch directives ($patch, $setElementOrder, ...) are not "
                "emulated; send a merge patch or a JSON patch"
            )
        result: dict[str, Any] = merge_patch(obj, body)
        return result
    if media == JSON_PATCH:
        if not isinstance(body, list):
            raise errors.bad_request(
                "json: cannot unmarshal object into Go value of type jsonpatch.Patch "
                "(a JSON patch must be a list of operations; kubernetes_asyncio sends dicts "
                "as json-patch for custom objects unless given "
                "_content_type='application/merge-patch+json')"
            )
        try:
            patched = jsonpatch.apply_patch(copy.deepcopy(obj), body)
        except jsonpatch.JsonPatchTestFailed as e:
            raise errors.unprocessable(
                rt, name, f"the server rejected our request due to an error in our request: {e}"
            ) from e
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise errors.unprocessable(rt, name, f"jsonpatch: {e}") from e
        except (TypeError, KeyError, ValueError) as e:
            raise errors.bad_request(f"invalid JSON patch: {e}") from e
        if not isinstance(patched, dict):
            raise errors.unprocessable(rt, name, "a JSON patch must leave an object")
        return patched
    raise errors.unsupported_media_type(content_type)
