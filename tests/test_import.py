import subprocess
import sys

import invoice_vlm


def test_import_is_light():
    code = (
        "import sys, invoice_vlm, invoice_vlm.cli, invoice_vlm.testing, invoice_vlm.backends.paligemma\n"
        "invoice_vlm.list_schemas(); invoice_vlm.list_backends()\n"
        "heavy = ('torch', 'transformers', 'peft', 'trl', 'datasets', 'dateparser', 'babel', 'rapidocr', 'fpdf')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_surface():
    assert invoice_vlm.__all__ == sorted(invoice_vlm.__all__)
    for name in invoice_vlm.__all__:
        assert hasattr(invoice_vlm, name), name
    assert invoice_vlm.__version__ != "0+unknown"


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "invoice_vlm.cli", "--version"], check=True, capture_output=True, text=True
    )
    assert out.stdout.startswith("invoice-vlm ")


def test_ci_extras_never_pull_vllm():
    """vllm brings CUDA wheels: no extra CI installs (test, and what it includes) may reach it; only 'vllm' does."""
    import re
    from pathlib import Path

    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def reached(name: str, seen: set[str]) -> set[str]:
        packages: set[str] = set()
        for requirement in extras[name]:
            nested = re.fullmatch(r"invoice-vlm\[(.+)\]", requirement)
            if nested:
                for inner in nested.group(1).split(","):
                    if inner not in seen:
                        packages |= reached(inner, seen | {inner})
            else:
                packages.add(re.split(r"[<>=\[; ]", requirement, maxsplit=1)[0].lower())
        return packages

    assert "vllm" not in reached("test", {"test"}) | reached("all", {"all"})
    assert "vllm" in reached("vllm", {"vllm"})
