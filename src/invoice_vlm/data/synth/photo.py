"""Photo style: a clean page made to look like a phone photo of a printed sheet."""

from __future__ import annotations

import functools
import io
import math
import random
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter

__all__ = ["photo_style"]


def _perspective_coeffs(
    src: Sequence[tuple[float, float]], dst: Sequence[tuple[float, float]]
) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE) mapping output points ``dst`` to input points ``src``."""
    import numpy as np

    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=float)
    b = np.array([c for point in src for c in point], dtype=float)
    return [float(c) for c in np.linalg.solve(a, b)]


@functools.lru_cache(maxsize=1)
def _noise_tile() -> Any:
    import numpy as np

    return np.random.default_rng(12345).standard_normal((256, 256)).astype(np.float32)


def _noise(size: tuple[int, int], sigma: float, rng: random.Random) -> Image.Image:
    """Gaussian sensor noise around 128: a fixed random tile, scaled and laid at a random offset."""
    import numpy as np

    tile = np.roll(_noise_tile(), (rng.randrange(256), rng.randrange(256)), axis=(0, 1))
    small = Image.fromarray(np.clip(128.0 + sigma * tile, 0, 255).astype(np.uint8))
    out = Image.new("L", size)
    for y in range(0, size[1], 256):
        for x in range(0, size[0], 256):
            out.paste(small, (x, y))
    return out.convert("RGB")


def photo_style(page: Image.Image, rng: random.Random) -> Image.Image:
    """Make a clean page look like a phone photo of a printed sheet.

    Uneven lighting, a paper tint and a soft shadow, the sheet placed on a background at a slight angle and in
    perspective, lens blur, sensor noise and JPEG artefacts. Smooth effects are computed at 1/8 resolution and
    scaled up, and the per-pixel work stays in Pillow's C code, so a page takes a few tens of milliseconds.
    """
    import numpy as np

    w, h = page.size
    sw, sh = max(w // 8, 2), max(h // 8, 2)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx / sw - 0.5) * math.cos(angle) + (yy / sh - 0.5) * math.sin(angle)
    light = 1.0 + rng.uniform(0.1, 0.25) * ramp
    shadow = Image.new("L", (sw, sh), 0)
    sx, sy = rng.uniform(0, sw), rng.uniform(0, sh)
    ImageDraw.Draw(shadow).polygon(
        [(sx + rng.uniform(-sw, sw) * 0.6, sy + rng.uniform(-sh, sh) * 0.6) for _ in range(4)], fill=255
    )
    shadow_mask = (
        np.asarray(shadow.filter(ImageFilter.GaussianBlur(rng.uniform(3, 7))), dtype=np.float32) / 255.0
    )
    light = light * (1.0 - rng.uniform(0.15, 0.35) * shadow_mask)
    tint = np.array(
        [rng.uniform(0.93, 1.0), rng.uniform(0.92, 1.0), rng.uniform(0.86, 0.98)], dtype=np.float32
    )
    shade = np.clip(light[..., None] * tint * 255.0, 0, 255).astype(np.uint8)
    shade_image = Image.fromarray(shade).resize((w, h), Image.Resampling.BILINEAR)
    sheet = ImageChops.multiply(page, shade_image).convert("RGBA")

    pad_x, pad_y = int(w * rng.uniform(0.06, 0.14)), int(h * rng.uniform(0.06, 0.14))
    cw, ch = w + 2 * pad_x, h + 2 * pad_y
    nrng = np.random.default_rng(rng.randrange(2**32))
    base = np.array([rng.randint(40, 150), rng.randint(35, 130), rng.randint(30, 110)], dtype=np.float32)
    background = base + nrng.normal(0, 12, (ch // 8 + 1, cw // 8 + 1, 3)).astype(np.float32)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).resize(
        (cw, ch), Image.Resampling.BILINEAR
    )

    rot = math.radians(rng.uniform(-4, 4))
    cx, cy = cw / 2, ch / 2
    corners = [(float(pad_x + dx), float(pad_y + dy)) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    jitter = 0.035
    dst = []
    for x, y in corners:
        x += rng.uniform(-jitter, jitter) * w
        y += rng.uniform(-jitter, jitter) * h
        dx, dy = x - cx, y - cy
        dst.append(
            (cx + dx * math.cos(rot) - dy * math.sin(rot), cy + dx * math.sin(rot) + dy * math.cos(rot))
        )
    src = [(0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h))]
    coeffs = _perspective_coeffs(src, dst)
    warped = sheet.transform((cw, ch), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    canvas.paste(warped, (0, 0), warped)

    # Lens softness: down- and up-sampling blurs like a phone camera at a fraction of a Gaussian blur's cost.
    soft = rng.uniform(0.55, 0.85)
    photo = canvas.resize((int(cw * soft), int(ch * soft)), Image.Resampling.BILINEAR).resize(
        (cw, ch), Image.Resampling.BILINEAR
    )
    photo = ImageChops.add(photo, _noise((cw, ch), rng.uniform(2.0, 7.0), rng), scale=1.0, offset=-128)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=rng.randint(40, 80))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
