"""Which API failures the operator retries quietly (kopf.TemporaryError)."""

from __future__ import annotations

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from vigil_operator.cluster.handlers import _transient


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ApiException(status=503), True),
        (ApiException(status=429), True),
        (ApiException(status=500), True),
        (ApiException(status=404), False),  # a real answer, handled where it matters
        (ApiException(status=422), False),  # our object is wrong: a bug, not weather
        (TimeoutError(), True),
        (aiohttp.ClientConnectionError(), True),
        (ConnectionResetError(), True),
        (KeyError("spec"), False),
    ],
)
def test_transient_classification(exc: BaseException, transient: bool) -> None:
    assert _transient(exc) is transient
