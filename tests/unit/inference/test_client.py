"""`vigil detect`'s pieces: light imports, content type sniffing, JSON shape."""

from __future__ import annotations

import subprocess
import sys

from vigil.v1 import anomaly_pb2
from vigil_inference.client import content_type_of, result_json


def test_client_imports_neither_torch_nor_pil() -> None:
    code = (
        "import sys, vigil_inference.cli, vigil_inference.client; "
        "print(sorted(m for m in ('torch', 'PIL', 'numpy', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_content_type_from_magic_bytes() -> None:
    assert content_type_of(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert content_type_of(b"\xff\xd8\xff\xe0....") == "image/jpeg"
    assert content_type_of(b"GIF89a") == ""
    assert content_type_of(b"") == ""


def test_result_json_has_every_field_in_snake_case() -> None:
    result = anomaly_pb2.DetectAnomalyResult(anomaly_score=1.5, threshold=2.0, model_version="v1")
    out = result_json(result, "a.png")
    assert out == {
        "image": "a.png",
        "is_anomalous": False,
        "confidence": 0.0,
        "anomaly_score": 1.5,
        "threshold": 2.0,
        "anomalies": [],
        "anomaly_mask": "",
        "model_version": "v1",
    }
