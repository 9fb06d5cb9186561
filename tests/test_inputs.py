from __future__ import annotations

import io

import pytest
from PIL import Image

from invoice_vlm.errors import DocumentError
from invoice_vlm.inputs import PDFPage, load_image, pdf_pages


def _png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_path_bytes_and_pil(tmp_path):
    img = Image.new("L", (40, 30), 128)
    path = tmp_path / "doc.png"
    img.save(path)
    for doc in (path, str(path), path.read_bytes(), img):
        out, _ = load_image(doc)
        assert out.mode == "RGB" and out.size == (40, 30)
    assert load_image(path)[1] == str(path)
    assert load_image(path.read_bytes())[1].startswith("<") and "bytes" in load_image(path.read_bytes())[1]


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "photo.jpg"
    img.save(path, exif=exif)
    out, _ = load_image(path)
    assert out.size == (20, 60)


def test_transparency_becomes_white():
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    out, _ = load_image(img)
    assert out.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("missing.png", "does not exist"),
        (b"not an image at all", "Cannot read"),
        (Image.new("RGB", (4, 100)), "only 4x100"),
        (12, "Cannot open a document of type int"),
    ],
)
def test_bad_documents_say_what(doc, match):
    with pytest.raises(DocumentError, match=match):
        load_image(doc)


def test_text_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DocumentError, match="notes.txt"):
        load_image(path)


def _make_pdf(path, pages: int) -> None:
    images = [Image.new("RGB", (200, 100), c) for c in ("white", "gray", "black")[:pages]]
    images[0].save(path, save_all=True, append_images=images[1:])


def test_pdf_pages(tmp_path):
    one, three = tmp_path / "one.pdf", tmp_path / "three.pdf"
    _make_pdf(one, 1)
    _make_pdf(three, 3)
    image, _ = load_image(one)
    assert image.mode == "RGB" and image.width > 100
    with pytest.raises(DocumentError, match="has 3 pages; pass invoice_vlm.inputs.pdf_pages"):
        load_image(three)
    pages = pdf_pages(three)
    assert [str(p) for p in pages] == ["three.pdf#page=1", "three.pdf#page=2", "three.pdf#page=3"]
    assert load_image(pages[2])[0].getpixel((10, 10)) == (0, 0, 0)
    with pytest.raises(DocumentError, match="page 5 does not exist"):
        load_image(PDFPage(three, 4))
