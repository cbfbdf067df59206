"""A Model's spec as typed values, with the CRD's defaults and rules re-checked.

The API server applies the CRD (`crds/models.vigil.dev.yaml`) before the
operator sees a Model, but the local runtime reads YAML directly and a CRD may
be older than the operator, so `parse_spec` checks everything again and raises
`SpecError` with the same user-facing messages; the shell turns that into a
HostingFailed status instead of a crash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

Metric = Literal["utilization", "rps", "concurrency"]
State = Literal["Running", "Stopped"]
ArtifactKind = Literal["pvc", "http", "file"]

METRICS: Final = ("utilization", "rps", "concurrency")
STATES: Final = ("Running", "Stopped")
MAX_UNITS_CAP: Final = 1000
MAX_ZONES: Final = 16
MAX_GPUS: Final = 16
MAX_STABILIZATION_S: Final = 3600
MAX_TARGET: Final = 1_000_000
GPU_RESOURCE: Final = "nvidia.com/gpu"

# The CRD's messages, word for word, so both paths tell the user the same thing.
MSG_MAX_LT_MIN: Final = "maxUnits must be greater than or equal to minUnits"
MSG_ZONES_REPEAT: Final = "zones must not name the same zone twice"
MSG_TARGET_POSITIVE: Final = "scaling.target must be greater than 0"
MSG_UTILIZATION_LE_1: Final = (
    "a utilization target is the busy fraction of a unit and must be at most 1 (e.g. 0.6)"
)
MSG_URI: Final = (
    "artifact.uri must be pvc://CLAIM/PATH, http(s)://HOST/PATH or file:///PATH, without spaces"
)
MSG_GPU_IN_RESOURCES: Final = "set GPUs with unit.gpus, not in unit.resources"
MSG_TOL_EXISTS_VALUE: Final = "a toleration's value must be empty when its operator is Exists"
MSG_TOL_EMPTY_KEY: Final = "a toleration with an empty key must use operator Exists"
MSG_TOL_SECONDS: Final = "tolerationSeconds needs effect NoExecute"
MSG_NAME: Final = (
    "the Model name must be a DNS-1035 label (at most 63 lowercase letters, digits or '-', "
    "starting with a letter): it names the Service and labels the units"
)

URI_RE: Final = re.compile(
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/\S+"
    r"|https?://[^\s/?#]+([/?#]\S*)?|file:///\S+)$"
)
ZONE_RE: Final = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
NAME_RE: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUANTITY_RE: Final = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_SUFFIX: Final[dict[str, Decimal | int]] = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


class SpecError(ValueError):
    """A Model spec the operator cannot host; the message is meant for its user."""


@dataclass(frozen=True)
class Artifact:
    """Where the .vigil file comes from: a claim and a path in it, a URL, or an image path."""

    uri: str
    kind: ArtifactKind
    claim: str = ""  # pvc only
    path: str = ""  # pvc: inside the claim; file: absolute path in the image


@dataclass(frozen=True)
class ScalingSpec:
    metric: Metric = "utilization"
    target: float = 0.6
    scale_up_stabilization_s: int = 0
    scale_down_stabilization_s: int = 300


@dataclass(frozen=True)
class Toleration:
    """A Pod toleration; `operator` defaults to Equal as in Kubernetes."""

    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: str = ""  # "" matches every effect
    toleration_seconds: int | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        if self.key:
            out["key"] = self.key
        if self.value:
            out["value"] = self.value
        if self.effect:
            out["effect"] = self.effect
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


@dataclass(frozen=True)
class UnitSpec:
    gpus: int = 1
    # {"requests": {...}, "limits": {...}} with quantities as strings
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    image: str = ""  # "" means the operator's configured image


@dataclass(frozen=True)
class ModelSpec:
    artifact: Artifact
    state: State = "Running"
    min_units: int = 1
    max_units: int | None = None
    zones: tuple[str, ...] | None = None
    scaling: ScalingSpec = field(default_factory=ScalingSpec)
    unit: UnitSpec = field(default_factory=UnitSpec)

    @property
    def artifact_uri(self) -> str:
        return self.artifact.uri

    @property
    def running(self) -> bool:
        return self.state == "Running"

    @property
    def ceiling(self) -> int:
        """The most units the autoscaler may ask for (minUnits when maxUnits is absent)."""
        return self.min_units if self.max_units is None else self.max_units

    @property
    def floor(self) -> int:
        """Units that must stay in service: minUnits while Running, 0 when Stopped."""
        return self.min_units if self.running else 0

    def clamp(self, units: int) -> int:
        """The autoscaler's wish bounded to [minUnits, maxUnits]; 0 when Stopped."""
        if not self.running:
            return 0
        return max(self.min_units, min(self.ceiling, units))


def parse_artifact_uri(uri: str) -> Artifact:
    """Split a checked artifact URI into what the manifests need."""
    if not URI_RE.match(uri):
        raise SpecError(MSG_URI)
    if uri.startswith("pvc://"):
        claim, _, path = uri.removeprefix("pvc://").partition("/")
        return Artifact(uri=uri, kind="pvc", claim=claim, path=path)
    if uri.startswith("file://"):
        return Artifact(uri=uri, kind="file", path=uri.removeprefix("file://"))
    return Artifact(uri=uri, kind="http")


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi", 4) as a number of base units."""
    text = str(value)
    if isinstance(value, bool) or not QUANTITY_RE.match(text):
        raise SpecError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    for suffix in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"):
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * _SUFFIX[suffix]
    if text[-1] in _SUFFIX and not text[-1].isdigit() and text[-1] != ".":
        return Decimal(text[:-1]) * _SUFFIX[text[-1]]
    try:
        return Decimal(text)  # plain or with an exponent
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise SpecError(f"{value!r} is not a Kubernetes quantity") from exc


def validate_name(name: str) -> None:
    """The Model's name becomes the Service's name, so it must be a DNS-1035 label."""
    if len(name) > 63 or not NAME_RE.match(name):
        raise SpecError(MSG_NAME)


def parse_spec(body_spec: Mapping[str, Any]) -> ModelSpec:
    """The spec as typed values with the CRD's defaults; `SpecError` names the problem."""
    if not isinstance(body_spec, Mapping):
        raise SpecError("spec must be an object")
    state = _enum(body_spec, "state", STATES, "Running")
    artifact = _obj(body_spec, "artifact", required=True)
    uri = artifact.get("uri")
    if not isinstance(uri, str) or not uri:
        raise SpecError("artifact.uri is required")
    if len(uri) > 2048:
        raise SpecError("artifact.uri must be at most 2048 characters")
    min_units = _int(body_spec, "minUnits", 1, 1, MAX_UNITS_CAP)
    max_units = _opt_int(body_spec, "maxUnits", 1, MAX_UNITS_CAP)
    if max_units is not None and max_units < min_units:
        raise SpecError(MSG_MAX_LT_MIN)
    return ModelSpec(
        artifact=parse_artifact_uri(uri),
        state=state,  # type: ignore[arg-type]
        min_units=min_units,
        max_units=max_units,
        zones=_zones(body_spec.get("zones")),
        scaling=_scaling(_obj(body_spec, "scaling")),
        unit=_unit(_obj(body_spec, "unit")),
    )


def _zones(raw: object) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise SpecError("zones must be a list of zone names")
    if not 1 <= len(raw) <= MAX_ZONES:
        raise SpecError(f"zones must list between 1 and {MAX_ZONES} zones")
    for zone in raw:
        if not isinstance(zone, str) or len(zone) > 63 or not ZONE_RE.match(zone):
            raise SpecError(
                f"zone {zone!r} is not a zone label value (1 to 63 letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit)"
            )
    if len(set(raw)) != len(raw):
        raise SpecError(MSG_ZONES_REPEAT)
    return tuple(raw)


def _scaling(raw: Mapping[str, Any]) -> ScalingSpec:
    metric = _enum(raw, "metric", METRICS, "utilization", prefix="scaling.")
    target = raw.get("target", 0.6)
    if isinstance(target, bool) or not isinstance(target, int | float):
        raise SpecError("scaling.target must be a number")
    if target <= 0:
        raise SpecError(MSG_TARGET_POSITIVE)
    if target > MAX_TARGET:
        raise SpecError(f"scaling.target must be at most {MAX_TARGET}")
    if metric == "utilization" and target > 1:
        raise SpecError(MSG_UTILIZATION_LE_1)
    up = _int(raw, "scaleUpStabilizationSeconds", 0, 0, MAX_STABILIZATION_S, "scaling.")
    down = _int(raw, "scaleDownStabilizationSeconds", 300, 0, MAX_STABILIZATION_S, "scaling.")
    return ScalingSpec(metric, float(target), up, down)  # type: ignore[arg-type]


def _unit(raw: Mapping[str, Any]) -> UnitSpec:
    gpus = _int(raw, "gpus", 1, 0, MAX_GPUS, "unit.")
    selector = _obj(raw, "nodeSelector", prefix="unit.")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items()):
        raise SpecError("unit.nodeSelector must map label names to strings")
    image = raw.get("image") or ""
    if not isinstance(image, str) or len(image) > 512:
        raise SpecError("unit.image must be a string of at most 512 characters")
    tolerations = raw.get("tolerations") or []
    if not isinstance(tolerations, list) or len(tolerations) > 32:
        raise SpecError("unit.tolerations must be a list of at most 32 tolerations")
    return UnitSpec(
        gpus=gpus,
        resources=_resources(_obj(raw, "resources", prefix="unit.")),
        node_selector=dict(selector),
        tolerations=tuple(_toleration(t) for t in tolerations),
        image=image,
    )


def _resources(raw: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        values = _obj(raw, kind, prefix="unit.resources.")
        if GPU_RESOURCE in values:
            raise SpecError(MSG_GPU_IN_RESOURCES)
        for name, value in values.items():
            try:
                parse_quantity(value)
            except SpecError as exc:
                raise SpecError(f"unit.resources.{kind}.{name}: {exc}") from None
        if values:
            out[kind] = {str(k): str(v) for k, v in values.items()}
    requests, limits = out.get("requests", {}), out.get("limits", {})
    for name, request in requests.items():
        if name in limits and parse_quantity(request) > parse_quantity(limits[name]):
            raise SpecError(
                f"unit.resources.requests.{name} ({request}) exceeds its limit ({limits[name]})"
            )
    return out


def _toleration(raw: object) -> Toleration:
    if not isinstance(raw, Mapping):
        raise SpecError("each of unit.tolerations must be an object")
    operator = _enum(raw, "operator", ("Exists", "Equal"), "Equal", prefix="toleration ")
    effect = _enum(
        raw, "effect", ("", "NoSchedule", "PreferNoSchedule", "NoExecute"), "", "toleration "
    )
    key, value = str(raw.get("key") or ""), str(raw.get("value") or "")
    seconds = raw.get("tolerationSeconds")
    if operator == "Exists" and value:
        raise SpecError(MSG_TOL_EXISTS_VALUE)
    if not key and operator != "Exists":
        raise SpecError(MSG_TOL_EMPTY_KEY)
    if seconds is not None and (effect != "NoExecute" or not isinstance(seconds, int)):
        raise SpecError(MSG_TOL_SECONDS)
    return Toleration(key, operator, value, effect, seconds)  # type: ignore[arg-type]


def _obj(
    raw: Mapping[str, Any], key: str, required: bool = False, prefix: str = ""
) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            raise SpecError(f"{prefix}{key} is required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{prefix}{key} must be an object")
    return value


def _enum(
    raw: Mapping[str, Any], key: str, allowed: Sequence[str], default: str, prefix: str = ""
) -> str:
    value = raw.get(key, default)
    if value is None:
        value = default
    if value not in allowed:
        shown = ", ".join(a or repr(a) for a in allowed)
        raise SpecError(f"{prefix}{key} must be one of {shown}, not {value!r}")
    return str(value)


def _int(raw: Mapping[str, Any], key: str, default: int, lo: int, hi: int, prefix: str = "") -> int:
    value = raw.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{prefix}{key} must be a whole number, not {value!r}")
    if not lo <= value <= hi:
        raise SpecError(f"{prefix}{key} must be between {lo} and {hi}, not {value}")
    return value


def _opt_int(raw: Mapping[str, Any], key: str, lo: int, hi: int) -> int | None:
    if raw.get(key) is None:
        return None
    return _int(raw, key, lo, lo, hi)
