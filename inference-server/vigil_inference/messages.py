"""A Detection as the `vigil.v1` DetectAnomalyResult message, built in one place.

`vigil serve` answers with it, and bench/peer_servers.py's Triton, KServe and
Ray Serve peers answer with the very same message. Needs only the generated
messages (no gRPC server, health or reflection packages), so the peers' own
environment can import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vigil.v1 import anomaly_pb2

if TYPE_CHECKING:
    from vigil_inference.model import Detection


def result_message(det: Detection) -> anomaly_pb2.DetectAnomalyResult:
    """The result's fields, each anomaly with its area and colour, and the
    mask's PNG bytes when one was made (empty otherwise)."""
    anomalies = [
        anomaly_pb2.Anomaly(
            name=name,
            pixel_anomaly=anomaly_pb2.PixelAnomaly(total_percentage_area=area, color=color),
        )
        for name, color, area in det.anomalies
    ]
    return anomaly_pb2.DetectAnomalyResult(
        is_anomalous=det.is_anomalous,
        confidence=det.confidence,
        anomaly_score=det.anomaly_score,
        threshold=det.threshold,
        anomalies=anomalies,
        anomaly_mask=det.mask_png or b"",
        model_version=det.model_version,
    )
