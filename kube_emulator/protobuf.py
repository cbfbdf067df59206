"""Request bodies in Kubernetes protobuf, for the few kinds clients send that way.

client-go's typed clients (kubectl's ``create namespace``, helm's release
storage in Secrets) encode built-in objects as ``application/vnd.kubernetes.protobuf``
and have no fallback to JSON. This decodes those bodies (the ``k8s\\0``
envelope around a ``runtime.Unknown``) into the JSON form the store takes, for
Namespace and Secret: the fields of k8s.io/api/core/v1's
generated.proto and ObjectMeta's user-settable ones. Other kinds get a 415
naming the kind, so a gap shows up as a clear error.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

from . import errors

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

Obj = dict[str, Any]
Fields = list[tuple[int, int, Any]]  # (field number, wire type, value)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _text(raw: bytes) -> str:
    return raw.decode("utf-8")


def _map(raw: bytes, value: Callable[[bytes], Any]) -> tuple[str, Any]:
    entry = {number: v for number, _, v in _fields(raw)}
    return _text(entry.get(1, b"")), value(entry.get(2, b""))


def _object_meta(raw: bytes) -> Obj:
    md: Obj = {}
    scalars = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for number, _, value in _fields(raw):
        if number in scalars:
            md[scalars[number]] = _text(value)
        elif number in (11, 12):
            key, text = _map(value, _text)
            md.setdefault("labels" if number == 11 else "annotations", {})[key] = text
        elif number == 14:
            md.setdefault("finalizers", []).append(_text(value))
    return md


def _bytes_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _secret(raw: bytes) -> Obj:
    obj: Obj = {}
    for number, _, value in _fields(raw):
        if number == 1:
            obj["metadata"] = _object_meta(value)
        elif number == 2:
            key, data = _map(value, _bytes_b64)
            obj.setdefault("data", {})[key] = data
        elif number == 3:
            obj["type"] = _text(value)
        elif number == 4:
            key, text = _map(value, _text)
            obj.setdefault("stringData", {})[key] = text
        elif number == 5:
            obj["immutable"] = bool(value)
    return obj


def _namespace(raw: bytes) -> Obj:
    obj: Obj = {}
    for number, _, value in _fields(raw):
        if number == 1:
            obj["metadata"] = _object_meta(value)
        elif number == 2:
            finalizers = [_text(v) for n, _, v in _fields(value) if n == 1]
            if finalizers:
                obj["spec"] = {"finalizers": finalizers}
    return obj


_KINDS: dict[tuple[str, str], Callable[[bytes], Obj]] = {
    ("v1", "Secret"): _secret,
    ("v1", "Namespace"): _namespace,
}


def decode(body: bytes) -> Obj:
    """The JSON form of a protobuf-encoded object; ApiError 415/400 if not decodable."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("protobuf body without the k8s\\0 envelope")
    try:
        unknown = {number: value for number, _, value in _fields(body[len(MAGIC) :])}
        type_meta = {number: _text(v) for number, _, v in _fields(unknown.get(1, b""))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        decoder = _KINDS.get((api_version, kind))
        if decoder is None:
            raise errors.unsupported_media_type(f"{MEDIA_TYPE} ({api_version} {kind})")
        obj = decoder(unknown.get(2, b""))
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise errors.bad_request(f"error decoding protobuf body: {e}") from e
    return {"apiVersion": api_version, "kind": kind, **obj}
