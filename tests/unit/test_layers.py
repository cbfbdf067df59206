"""The layers of docs/architecture.md, as imports: what each package may use.

A change that makes the core reach into a shell, one shell into the other,
the unit into the operator, or anything but the command into the command,
fails here rather than in review. Imports under TYPE_CHECKING count too:
they are still a dependency of the reader."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools import ROOT

PACKAGES = {
    "vigil_operator": ROOT / "operator" / "vigil_operator",
    "vigil_inference": ROOT / "inference-server" / "vigil_inference",
    "vigil": ROOT / "inference-server" / "vigil",
    "vigil_cli": ROOT / "command" / "vigil_cli",
}

# module prefix -> prefixes of our modules it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "vigil_operator.core": (
        "vigil_operator.cluster",
        "vigil_operator.local",
        "vigil_operator.controller",
        "vigil_operator.metrics",
        "vigil_operator.scraper",
        "vigil_operator.settings",
        "vigil_cli",
        "vigil_inference",
    ),
    "vigil_operator.cluster": ("vigil_operator.local", "vigil_cli", "vigil_inference"),
    "vigil_operator.local": ("vigil_operator.cluster", "vigil_cli", "vigil_inference"),
    "vigil_operator.controller": ("vigil_operator.cluster", "vigil_operator.local", "vigil_cli"),
    "vigil_inference": ("vigil_operator", "vigil_cli"),
    "vigil.": ("vigil_operator", "vigil_inference", "vigil_cli"),
}
# Modules the pure core may import beyond the standard library and itself.
CORE_THIRD_PARTY = {"vigil", "celpy", "jsonschema", "prometheus_client", "yaml"}  # parsers, no I/O


def modules() -> Iterator[tuple[str, Path]]:
    for top, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if "_pb2" in path.name:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((top, *parts)), path


def imported(module: str, path: Path) -> set[str]:
    """Absolute names of what `module` imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


ALL = list(modules())


def test_the_scan_sees_every_layer() -> None:
    names = {m for m, _ in ALL}
    for prefix in FORBIDDEN:
        assert any(n.startswith(prefix) or n == prefix.rstrip(".") for n in names), prefix
    assert "vigil_cli.main" in names and "vigil_operator.core.reconcile" in names


@pytest.mark.parametrize(("module", "path"), ALL, ids=[m for m, _ in ALL])
def test_imports_keep_to_the_layers(module: str, path: Path) -> None:
    uses = imported(module, path)
    for prefix, banned in FORBIDDEN.items():
        if module == prefix.rstrip(".") or module.startswith(prefix.rstrip(".") + "."):
            bad = sorted(u for u in uses for b in banned if u == b or u.startswith(b + "."))
            assert not bad, f"{module} imports {bad}: see docs/architecture.md"


def test_the_core_is_pure() -> None:
    """No I/O libraries in the core: clients, servers and processes live in the shells."""
    import sys

    stdlib = set(sys.stdlib_module_names)
    io_modules = {"asyncio", "socket", "subprocess", "urllib", "http", "threading", "os"}
    for module, path in ALL:
        if not module.startswith("vigil_operator.core"):
            continue
        for name in imported(module, path):
            top = name.split(".")[0]
            if top in ("vigil_operator", "__future__"):
                continue
            assert top not in io_modules, f"{module} imports {name}"
            assert top in stdlib or top in CORE_THIRD_PARTY, f"{module} imports {name}"
