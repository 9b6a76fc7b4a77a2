"""Sessions for development and CI: ``nox -s tests e2e lint typecheck docs bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test,cli,bench]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """The end-to-end tier: Locust clusters, real-time load runs, the benchmark smoke run."""
    session.install("-e", ".[test,cli,bench]")
    session.run("python", "-m", "pytest", "-m", "e2e", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test,cli,bench,dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".[bench,cli]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def audit(session: nox.Session) -> None:
    session.install("pip-audit>=2.7")
    session.run("pip-audit", "-r", ".ci/runtime.lock", "--no-deps", "--disable-pip")
