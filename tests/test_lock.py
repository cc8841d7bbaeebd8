"""requirements.lock still satisfies pyproject.toml: every declared requirement (dependencies, every extra,
[build-system].requires; torch aside) is pinned, at a version its specifier allows, on every Python the lock covers,
with hashes. After editing pyproject.toml, refresh the lock with scripts/refresh_lock.sh."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
REFRESH = "run scripts/refresh_lock.sh"
# torch is installed first and on its own (CPU wheel in CI, a CUDA index on pods); the rest only torch pulls in.
LEFT_OUT = ("torch", "triton", "nvidia-", "cuda-")
PYTHONS = ("3.11", "3.12", "3.13")


def declared() -> list[Requirement]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    lines = list(project["dependencies"]) + list(pyproject["build-system"]["requires"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "torch"]


def lock_entries() -> list[tuple[Requirement, list[str]]]:
    """(pin, its --hash options) for each requirement in the lock; comments and annotations dropped."""
    entries: list[tuple[Requirement, list[str]]] = []
    for line in (REPO / "requirements.lock").read_text().splitlines():
        text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("--hash") else line.strip()
        text = text.rstrip("\\").strip()
        if not text:
            continue
        if text.startswith("--hash="):
            entries[-1][1].append(text)
        else:
            entries.append((Requirement(text), []))
    return entries


def pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not an exact pin"
    return spec.version


def test_every_lock_line_is_an_exact_pin_with_sha256_hashes():
    entries = lock_entries()
    assert len(entries) > 20
    for req, hashes in entries:
        pinned_version(req)
        assert hashes and all(h.startswith("--hash=sha256:") for h in hashes), f"{req.name} has no sha256 hash"


def test_torch_and_its_cuda_wheels_are_left_out():
    names = [canonicalize_name(req.name) for req, _ in lock_entries()]
    assert not [n for n in names if n.startswith(LEFT_OUT)], "torch belongs outside the lock: " + REFRESH


@pytest.mark.parametrize("python", PYTHONS)
def test_every_declared_requirement_is_pinned_to_an_allowed_version(python: str):
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    pins: dict[str, list[str]] = {}
    for req, _ in lock_entries():
        if req.marker is None or req.marker.evaluate(env):
            pins.setdefault(canonicalize_name(req.name), []).append(pinned_version(req))
    assert all(len(v) == 1 for v in pins.values()), f"two pins of one package for Python {python}: {pins}"
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not in requirements.lock for Python {python}: {REFRESH}"
        (version,) = pins[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, but pyproject.toml asks for {req}: {REFRESH}"
        )
