"""What both ends of `vigil.v1.AnomalyDetection` agree on, stated once: the
service's name (health checks, reflection, routing), a unit's ports, and the
message sizes every server and channel allows. Plain values: the pure core
and the command's parser import them."""

from typing import Final

SERVICE_NAME: Final = "vigil.v1.AnomalyDetection"  # anomaly.proto's package and service
GRPC_PORT: Final = 50051  # a unit's gRPC port (DESIGN.md), and its Service's
METRICS_PORT: Final = 8080  # a unit's Prometheus /metrics
# A request: above the unit's 8 MiB image limit, so an oversized image gets the
# unit's INVALID_ARGUMENT message rather than a transport error.
MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024
MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024  # a response: room for a 4096x4096 mask
