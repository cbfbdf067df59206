"""The README's Lookout migration guide, step by step, on a generated Lookout
export (two defect types, colour-coded masks, s3:// references): the guide's
own commands, a real `vigil train`, `vigil local up` running the Model with
minUnits/maxUnits, and the guide's before/after client code against it."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.tools import ROOT, free_port
from vigil_inference import synthetic

pytestmark = pytest.mark.slow

VIGIL = [sys.executable, "-m", "vigil_cli"]
BUCKET = "s3://my-bucket/lookout-export/pcb/"  # the README's example bucket


def guide() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Migrating a Lookout for Vision project")
    return text[start : text.index("\n## ", start)]


def blocks(lang: str) -> list[str]:
    found = re.findall(rf"```{lang}\n(.*?)```", guide(), flags=re.S)
    return [textwrap.dedent(b) for b in found]  # the guide's blocks sit in a list


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def vigil(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([*VIGIL, *args], cwd)


def test_the_migration_guide_works_as_written(tmp_path: Path) -> None:
    # 1. The export, as `aws s3 sync` leaves it: manifests referencing s3://.
    export = tmp_path / "pcb-export"
    synthetic.write_lookout_dataset(
        export, 12, 4, ("scratch", "blotch"), seed=11, s3_uri=BUCKET.rstrip("/")
    )
    sync, sed_and_train, *_ = blocks("sh")
    assert f"aws s3 sync {BUCKET} ./pcb-export/" in sync

    # 2. vigil train refuses s3:// and says how to sync and rewrite.
    refused = vigil(["train", "--manifest", "train.manifest", "--out", "x.vigil"], export)
    assert refused.returncode == 1
    assert f"aws s3 sync {BUCKET}" in refused.stderr and "sed 's#" in refused.stderr
    assert not (export / "x.vigil").exists()

    # The guide's sed lines, run as written.
    seds = [line for line in sed_and_train.splitlines() if line.startswith("sed ")]
    assert len(seds) == 2
    for line in seds:
        words = shlex.split(line)
        out_file = words[words.index(">") + 1]
        with (export / out_file).open("w") as out:
            subprocess.run(words[: words.index(">")], cwd=export, stdout=out, check=True)
    assert "s3://" not in (export / "train.local.manifest").read_text()

    # 3. Train, as the guide says (a smaller memory bank keeps the test quick).
    [train_line] = [line for line in blocks("sh")[2].splitlines() if line.startswith("vigil train")]
    trained = vigil([*shlex.split(train_line)[1:], "--max-bank", "512", "--quiet"], export)
    assert trained.returncode == 0, trained.stderr
    assert re.search(r"scratch\s+#2CA02C\s+precision", trained.stdout), trained.stdout
    assert re.search(r"blotch\s+#1F77B4\s+precision", trained.stdout), trained.stdout

    # 4. The Model YAML from the guide, run by vigil local up.
    [model_yaml] = blocks("yaml")
    assert "minUnits: 1" in model_yaml and "maxUnits: 3" in model_yaml
    (export / "pcb.yaml").write_text(model_yaml)
    port, metrics_port, api = free_port(), free_port(), f"127.0.0.1:{free_port()}"
    log = tmp_path / "local-up.log"
    with log.open("wb") as sink:
        up = subprocess.Popen(
            [
                *VIGIL,
                *("local", "up", "-f", "pcb.yaml", "--zones", "a,b"),
                *("--port", str(port), "--metrics-port", str(metrics_port), "--api", api),
            ],
            cwd=export,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        status = wait_hosted(api, up, log)
        assert status["inServiceUnits"] == 1 and status["desiredUnits"] == 1

        # 5. The guide's client code, after: gRPC, read as Lookout's dict.
        image_path = sorted((export / "test" / "anomaly").glob("blotch-*.png"))[0]
        results = after_client(port, image_path)
        assert results["names"] == ["blotch"]
        result = results["result"]
        assert result["Anomalies"][0]["Name"] == "background"
        assert result["Anomalies"][1]["PixelAnomaly"]["Color"] == "#1F77B4"
        assert base64.b64decode(result["AnomalyMask"]).startswith(b"\x89PNG")

        # ... and the scripts' form: vigil detect --format lookout.
        detect = vigil(
            ["detect", "--target", f"127.0.0.1:{port}", "--format", "lookout", str(image_path)],
            export,
        )
        assert detect.returncode == 0, detect.stderr
        assert json.loads(detect.stdout)["DetectAnomalyResult"] == result
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def wait_hosted(api: str, up: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert up.poll() is None, log.read_text(errors="replace")[-3000:]
        got = subprocess.run(
            [*VIGIL, "local", "get", "models", "-o", "json", "--api", api],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if got.returncode == 0:
            listed = json.loads(got.stdout)
            items = listed.get("items", [listed]) if isinstance(listed, dict) else listed
            status = next((m.get("status") or {} for m in items), {})
            if status.get("phase") == "Hosted":
                return status
        time.sleep(0.5)
    raise AssertionError(f"not Hosted: {status}\n{log.read_text(errors='replace')[-3000:]}")


def after_client(port: int, image_path: Path) -> dict[str, Any]:
    """Run the guide's "after" Python block with its endpoint and image."""
    [_, after] = blocks("python")
    from vigil.v1 import anomaly_pb2, anomaly_pb2_grpc
    from vigil_inference.client import lookout_json

    scope: dict[str, Any] = {
        "grpc": grpc,
        "anomaly_pb2": anomaly_pb2,
        "anomaly_pb2_grpc": anomaly_pb2_grpc,
        "lookout_json": lookout_json,
        "image": image_path.read_bytes(),
    }
    exec(after.replace("127.0.0.1:50051", f"127.0.0.1:{port}"), scope)
    return scope
