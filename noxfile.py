"""Sessions CI runs: ``nox -s tests families``, then ``lint typecheck docs package``.

torch goes in first as the CPU build (``torch==2.13.0`` resolves to the CPU wheel on this project's machines), so
the project's ``torch>=2.4`` range is already satisfied and pip never pulls a multi-GB CUDA build. Elsewhere, point
``INVOICE_VLM_TORCH_INDEX`` at a CPU wheel index (e.g. PyTorch's ``/whl/cpu``) to get the same effect.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.sessions = ["tests", "families", "lint", "typecheck", "docs", "package"]
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
    """The test suite: CPU only, offline, tiny models built on the fly; `-- -m "not slow"` for a fast loop.

    Without arguments, the training tests then run twice more, with one thread and with another seed: a test that
    passes only on one machine's float rounding or one seed's luck fails here first.
    """
    install_project(session, "test")
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    session.run("pytest", *(session.posargs or ["-q"]), env=env)
    if session.posargs:
        return
    variants = {
        "one thread": {"INVOICE_VLM_TEST_THREADS": "1"},
        "another seed": {"INVOICE_VLM_TEST_SEED": "7"},
    }
    for name, extra in variants.items():
        session.log(f"training tests again, {name}")
        session.run("pytest", "-q", "-m", "training", "tests", env={**env, **extra})


TORCHVISION = ("torch==2.14.1", "torchvision==0.29.1")
"""The families whose processors need torchvision (Qwen-VL) run on this pair: the CPU build of torch 2.13 has no
matching torchvision, and these (CUDA builds, which run on a CPU) install without the network here."""


@nox.session
def families(session: nox.Session) -> None:
    """The model families whose processors need torchvision (Qwen2/2.5/3-VL), in a venv of their own.

    The same tests as the other families (tests/test_families.py, the cases marked ``torchvision``), on torch 2.14.1
    with torchvision 0.29.1, the training one again with another seed; the ``tests`` session skips those cases.
    """
    install(session, *TORCHVISION)
    install(session, "-e", ".[train,constrained]", "pytest>=8.0")
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    session.run(
        "pytest", *(session.posargs or ["-q", "-m", "torchvision", "tests/test_families.py"]), env=env
    )
    if not session.posargs:
        session.log("training tests again, another seed")
        marks = "torchvision and training"
        session.run(
            "pytest", "-q", "-m", marks, "tests/test_families.py", env={**env, "INVOICE_VLM_TEST_SEED": "7"}
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
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, check them, install the wheel with [ocr] in a fresh venv and run the README's main job.

    What a user of the published package gets: every file the source tree ships is in the wheel, the metadata
    renders on an index (twine check), and the main job runs from the installed wheel outside the clone.
    """
    install(session, "build>=1.2", "twine>=5")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    built = sorted(str(p) for p in dist.iterdir())
    session.run("twine", "check", "--strict", *built)
    wheel = next(p for p in built if p.endswith(".whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "src/invoice_vlm"], capture_output=True, text=True, check=True
    ).stdout.split()
    missing = [f for f in tracked if f.removeprefix("src/") not in shipped]
    if missing:
        session.error(f"files of the source tree missing from the wheel: {missing}")
    with tempfile.TemporaryDirectory() as where:
        venv = Path(where) / "venv"
        session.run(sys.executable, "-m", "venv", str(venv), external=True)
        python = str(venv / "bin" / "python")
        session.run(python, "-m", "pip", "install", "-q", f"{wheel}[ocr]", external=True)
        image = str(Path("examples/pallet_label.jpg").resolve())
        # Outside the clone, so only the installed wheel is importable.
        command = [str(venv / "bin" / "invoice-vlm"), "extract", image, "--backend", "ocr"]
        command += ["--schema", "pallet_label", "--no-progress"]
        session.log(" ".join(command))
        job = subprocess.run(command, cwd=where, capture_output=True, text=True, timeout=600)
        if job.returncode != 0:
            session.error(
                f"the README's main job failed from the wheel (exit {job.returncode}): {job.stderr}"
            )
        result = json.loads(job.stdout.strip().splitlines()[-1])
        if not result["valid"] or result["unreadable"]:
            session.error(f"the README's main job gave an invalid result from the wheel: {result['errors']}")
        check = (
            "import invoice_vlm, pathlib; root = pathlib.Path(invoice_vlm.__file__).parent; "
            "assert 'site-packages' in str(root), root; "
            "assert (root / 'serve' / 'page.html').is_file() and (root / 'py.typed').is_file()"
        )
        subprocess.run([python, "-c", check], cwd=where, check=True)
    session.log(f"shipped {len(shipped)} files; the wheel's main job read {result['source']} as valid")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site with mkdocs --strict (broken links and bad references fail)."""
    install(session, "-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
