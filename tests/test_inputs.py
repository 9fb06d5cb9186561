from __future__ import annotations

import io

import pytest
from PIL import Image

from invoice_vlm.errors import DocumentError
from invoice_vlm.inputs import PDFPage, load_document, load_image, load_pages, pdf_pages


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
        (b"not an image at all", "is not a PNG, JPEG, WebP, BMP, GIF, TIFF or PDF file"),
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
    with pytest.raises(DocumentError, match=r"has 3 pages; use invoice_vlm.inputs.load_document"):
        load_image(three)
    pages = pdf_pages(three)
    assert [str(p) for p in pages] == ["three.pdf#page=1", "three.pdf#page=2", "three.pdf#page=3"]
    assert load_image(pages[2])[0].getpixel((10, 10)) == (0, 0, 0)
    with pytest.raises(DocumentError, match="page 5 does not exist"):
        load_image(PDFPage(three, 4))


# --- every odd-but-valid document: pages and pixel content --------------------------------------------------------


def _page_with_mark(mode: str = "RGB", size=(80, 60)) -> Image.Image:
    """White paper with a black square in the top-left quarter: where the content must be after loading."""
    image = Image.new("RGB", size, "white")
    image.paste((0, 0, 0), (8, 8, 28, 28))
    return image.convert(mode)


def _content_survives(page: Image.Image) -> None:
    assert page.mode == "RGB"
    assert max(page.getpixel((15, 15))) < 40  # the mark is dark
    assert min(page.getpixel((60, 45))) > 215  # the paper is light


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    _page_with_mark("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    _content_survives(load_image(path)[0])


def test_transparent_png_lies_on_white_paper(tmp_path):
    image = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (8, 8, 28, 28))
    path = tmp_path / "t.png"
    image.save(path)
    _content_survives(load_image(path)[0])


def test_sixteen_bit_scan_is_not_a_white_page(tmp_path):
    import numpy as np

    values = np.full((60, 80), 60000, dtype=np.uint16)  # light paper
    values[8:28, 8:28] = 3000  # dark ink
    path = tmp_path / "scan16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    _content_survives(load_image(path)[0])
    _content_survives(load_image(values)[0])  # the same as an array


@pytest.mark.parametrize("kind", ["float01", "float255", "bool", "uint8_rgb", "uint8_rgba"])
def test_numpy_arrays(kind):
    import numpy as np

    ink = np.ones((60, 80), dtype=bool)
    ink[8:28, 8:28] = False
    arrays = {
        "float01": ink.astype(np.float32),
        "float255": ink.astype(np.float64) * 255.0,
        "bool": ink,
        "uint8_rgb": np.repeat((ink * 255).astype(np.uint8)[:, :, None], 3, axis=2),
        "uint8_rgba": np.dstack(
            [np.repeat((ink * 255).astype(np.uint8)[:, :, None], 3, axis=2), np.full((60, 80), 255, np.uint8)]
        ),
    }
    _content_survives(load_image(arrays[kind])[0])
    assert load_image(arrays[kind])[1].startswith("<array 60x80")


def test_exif_rotated_jpeg_content(tmp_path):
    image = _page_with_mark(size=(60, 80)).rotate(90, expand=True)  # stored sideways (80 x 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
    path = tmp_path / "sideways.jpg"
    image.save(path, exif=exif, quality=95)
    page = load_image(path)[0]
    assert page.size == (60, 80) and max(page.getpixel((15, 15))) < 40


def test_webp_palette_gif_bmp_and_file_objects(tmp_path):
    for name, mode in (("p.webp", "RGB"), ("p.gif", "P"), ("p.bmp", "1"), ("p.tif", "L")):
        path = tmp_path / name
        _page_with_mark(mode).save(path, **({"lossless": True} if name.endswith("webp") else {}))
        _content_survives(load_image(path)[0])
        with path.open("rb") as f:
            page, source = load_image(f)
        _content_survives(page)
        assert source == str(path)


def test_two_frame_tiff_gives_two_pages_and_a_gif_one(tmp_path):
    first, second = _page_with_mark(), Image.new("RGB", (80, 60), "black")
    path = tmp_path / "two.tif"
    first.save(path, save_all=True, append_images=[second])
    pages = load_pages(path)
    assert [name for _, name in pages] == [f"{path}#page=1", f"{path}#page=2"]
    _content_survives(pages[0][0])
    assert pages[1][0].getpixel((60, 45)) == (0, 0, 0)
    animated = tmp_path / "anim.gif"
    first.save(animated, save_all=True, append_images=[second])
    assert len(load_document(animated)) == 1  # a GIF's frames are animation, not pages
    with pytest.raises(DocumentError, match="has 2 pages, more than max_pages=1"):
        load_document(path, max_pages=1)


def test_three_page_pdf_from_path_bytes_and_file(tmp_path):
    pytest.importorskip("pypdfium2")
    path = tmp_path / "three.pdf"
    _make_pdf(path, 3)
    for doc in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        pages = load_pages(doc)
        assert len(pages) == 3 and pages[2][0].getpixel((10, 10)) == (0, 0, 0)
    assert [name for _, name in load_pages(path)][1] == f"{path}#page=2"


# --- every broken document: a clear message, nothing decoded that should not be ------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (
            lambda p: p.write_text("these are my notes, not a photo"),
            "is not a PNG, JPEG, WebP, BMP, GIF, TIFF or PDF file",
        ),
        (
            lambda p: p.write_bytes(_png_bytes(Image.effect_noise((200, 200), 60))[:4000]),
            "damaged or truncated",
        ),
        (lambda p: p.write_bytes(_png_claiming(12000, 12000)), "12000x12000 pixels.*more than max_pixels"),
        (lambda p: p.write_bytes(_png_claiming(40000, 40000)), "far too large"),
        (lambda p: p.write_bytes(b"%PDF-1.4\n% not really"), "Cannot read .* as a PDF"),
    ],
)
def test_broken_documents_are_named_with_what_to_do(tmp_path, make, match):
    path = tmp_path / "photo.jpg"
    make(path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray Pillow warnings either
        with pytest.raises(DocumentError, match=match) as caught:
            load_document(path)
    assert str(path) in str(caught.value) and caught.value.source == str(path)


def test_password_protected_pdf(tmp_path):
    pytest.importorskip("pypdfium2")
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="secret invoice")
    pdf.set_encryption(owner_password="owner", user_password="user")
    path = tmp_path / "locked.pdf"
    pdf.output(str(path))
    with pytest.raises(DocumentError, match="password-protected PDF; save a decrypted copy"):
        load_document(path)


def test_oversized_header_is_refused_before_decoding(tmp_path):
    """Peak memory stays small: the size is read from the header, nothing is decoded."""
    import subprocess
    import sys

    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(30000, 30000))
    code = (
        "import resource, sys\n"
        "from invoice_vlm.inputs import load_document\n"
        "from invoice_vlm.errors import DocumentError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    load_document({str(path)!r}, max_pixels=10**12)\n"
        "except DocumentError as e:\n"
        "    print('refused', e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0].startswith("refused") and int(out[1]) < 50, out


def test_file_objects_are_named_without_memory_addresses():
    with pytest.raises(DocumentError) as caught:
        load_document(io.BytesIO(b""))
    assert "<BytesIO file object>" in str(caught.value) and "0x" not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"plain text", "unsupported"),
        (_png_bytes(Image.effect_noise((200, 200), 60))[:4000], "damaged"),
        (_png_claiming(12000, 12000), "too_large"),
    ],
)
def test_errors_say_what_kind_of_problem(data, reason):
    with pytest.raises(DocumentError) as caught:
        load_document(data)
    assert caught.value.reason == reason
