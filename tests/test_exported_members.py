"""The public surface: every public name is exported once and documented."""

from __future__ import annotations

import inspect
import os

import polyai_async

from . import programs


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, unique, and names only what the package defines."""
    names = polyai_async.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(polyai_async, name), name


def test_no_public_name_is_left_out() -> None:
    """Every public class or function of the private modules is re-exported."""
    exported = set(polyai_async.__all__)
    for module_name in (
        "_adaptive",
        "_client",
        "_config",
        "_conversation",
        "_errors",
        "_hooks",
        "_models",
        "_pool",
        "_retry",
    ):
        module = getattr(polyai_async, module_name)
        for name in getattr(module, "__all__", []):
            assert name in exported, f"{module_name}.{name} is not exported"


def test_public_names_have_docstrings() -> None:
    """Every exported class and each of its public methods has a docstring."""
    for name in polyai_async.__all__:
        obj = getattr(polyai_async, name)
        if not inspect.isclass(obj):
            continue
        assert obj.__doc__, name
        assert obj.__doc__.strip(), name
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not callable(member):
                continue
            assert member.__doc__, f"{name}.{attr}"


async def test_fake_server_is_importable_from_the_package_lazily(
    program_runner: programs.ProgramRunner,
) -> None:
    """``from polyai_async import FakePolyAI`` works, and only then imports the fake server."""
    code = (
        "import sys, polyai_async\n"
        "assert 'polyai_async.testing' not in sys.modules, 'imported too early'\n"
        "from polyai_async import FakePolyAI\n"
        "from polyai_async.testing import FakePolyAI as Fake\n"
        "assert FakePolyAI is Fake\n"
        "try:\n"
        "    from polyai_async import NoSuchName\n"
        "except ImportError as exc:\n"
        "    assert 'NoSuchName' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('NoSuchName imported')\n"
    )
    # A new process that imports polyai_async afresh (the fork server preloads no module of it).
    status, _, err = await programs.run_python(
        program_runner, "-c", code, env=dict(os.environ), timeout=60
    )
    assert status == 0, err
