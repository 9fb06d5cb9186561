"""Sessions CI runs: ``nox -s tests lint typecheck docs``.

torch goes in first as the CPU build (``torch==2.13.0`` resolves to the CPU wheel on this project's machines), so
the project's ``torch>=2.4`` range is already satisfied and pip never pulls a multi-GB CUDA build. Elsewhere, point
``INVOICE_VLM_TORCH_INDEX`` at a CPU wheel index (e.g. PyTorch's ``/whl/cpu``) to get the same effect.
"""

from __future__ import annotations

import os
import time

import nox
from nox.command import CommandFailed

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("INVOICE_VLM_TORCH", "torch==2.13.0")
INSTALL_ATTEMPTS = 3


def install(session: nox.Session, *args: str) -> None:
    """``session.install``, tried up to three times.

    Downloads get cut off mid-file on CI's network (one run lost ``triton``, 286 MB, which xgrammar pulls on Linux,
    after pip's own resume attempts), and a failed install fails the whole run before any test. The pause lets a
    dropped connection recover; a real install error still fails the session, a minute later.
    """
    for attempt in range(1, INSTALL_ATTEMPTS + 1):
        try:
            session.install(*args)
            return
        except CommandFailed:
            if attempt == INSTALL_ATTEMPTS:
                raise
            pause = 20 * attempt
            session.warn(
                f"pip install failed (attempt {attempt} of {INSTALL_ATTEMPTS}); trying again in {pause} s"
            )
            time.sleep(pause)


def install_project(session: nox.Session, extras: str) -> None:
    index = os.environ.get("INVOICE_VLM_TORCH_INDEX")
    install(session, TORCH, *(["--index-url", index] if index else []))
    install(session, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite: CPU only, offline, tiny models built on the fly; `-- -m "not slow"` for a fast loop."""
    install_project(session, "test")
    session.run(
        "pytest",
        *(session.posargs or ["-q"]),
        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    install(session, "ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/."""
    install_project(session, "all")
    install(session, "mypy>=1.10")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site with mkdocs --strict (broken links and bad references fail)."""
    install(session, "-e", ".", "mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
