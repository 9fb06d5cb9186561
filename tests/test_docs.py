"""The docs' Python code blocks run, so the docs cannot drift from the code.

Every ```python block of README.md and docs/*.md runs, a page's blocks in order in one fresh interpreter, in a
scratch folder where ``examples/`` is the repository's. A block that needs what CI does not have says so on its first line,
``# needs: <what>``, which readers see too; such blocks are only compiled.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[str]:
    return [textwrap.dedent(b) for b in BLOCK.findall(page.read_text(encoding="utf-8"))]


def test_every_block_compiles_and_says_what_it_needs():
    found = 0
    for page in PAGES:
        for code in blocks(page):
            found += 1
            compile(code, str(page), "exec")
            first = code.lstrip().splitlines()[0]
            if first.startswith("# needs"):
                assert re.match(r"# needs: \S", first), f"{page.name}: say what the block needs: {first!r}"
    assert found > 10


def runnable(page: Path) -> list[str]:
    return [b for b in blocks(page) if not b.lstrip().startswith("# needs:")]


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=lambda p: p.name)
def test_runnable_blocks_run(page, tmp_path):
    script = tmp_path / "page.py"
    script.write_text("\n\n".join(runnable(page)), encoding="utf-8")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, f"{page.name}:\n{run.stderr[-3000:]}"
