"""A gRPC server as every `vigil.v1.AnomalyDetection` endpoint binds one (a
unit, and the local runtime's client endpoint in front of units): the same
request size limit, a taken port an error rather than a silent share, and
standard health and reflection, so grpcurl, grpc_health_probe and kubelet
probes see one surface wherever a client connects."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # public as health.aio; stubs lack it
from grpc_reflection.v1alpha import reflection

from vigil.v1.wire import MAX_REQUEST_BYTES, SERVICE_NAME


def new_server(health: HealthServicer) -> grpc.aio.Server:
    """An unbound server that already answers health checks and reflection;
    the caller adds the AnomalyDetection service and a port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.so_reuseport", 0),  # a taken port is an error, not a silent share
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return server
