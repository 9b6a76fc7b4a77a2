"""The pinned runtime dependencies (.ci/runtime.lock) agree with the package's requirements."""

from __future__ import annotations

from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parent.parent / ".ci" / "runtime.lock"


def test_lock_satisfies_every_runtime_requirement() -> None:
    """Each runtime dependency is pinned in the lock, at a version the package allows."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    runtime = [Requirement(r) for r in requires("polyai-async") or []]
    runtime = [r for r in runtime if r.marker is None]  # extras carry an `extra ==` marker
    assert {canonicalize_name(r.name) for r in runtime} >= {"aiohttp", "attrs", "cattrs"}
    for requirement in runtime:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]}: {requirement}"
