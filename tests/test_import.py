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
