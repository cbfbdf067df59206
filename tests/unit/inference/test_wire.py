"""The wire constants stated once in `vigil.v1.wire` match the proto and the
unit's image limit."""

from vigil.v1 import anomaly_pb2
from vigil.v1.wire import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, SERVICE_NAME
from vigil_inference.images import MAX_IMAGE_BYTES


def test_the_service_name_is_the_protos() -> None:
    assert anomaly_pb2.DESCRIPTOR.services_by_name["AnomalyDetection"].full_name == SERVICE_NAME


def test_a_request_has_room_for_the_largest_image_and_a_response_for_a_mask() -> None:
    assert MAX_REQUEST_BYTES > MAX_IMAGE_BYTES
    assert MAX_RESPONSE_BYTES >= 4096 * 4096 * 3
