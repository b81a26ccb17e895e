"""Images for vision chat requests: generated (seeded, with Pillow) or read from a folder, sent as data URLs.

``--llm-images`` draws how many images a request carries (``N``, ``A-B`` or a distribution,
as ``--llm-output-tokens``), ``--llm-image-size WxH[,WxH...]`` the resolution of each
generated image (one of the list, drawn per image), ``--llm-image-format`` its encoding, and
``--llm-image-dir`` a folder whose images are sent instead. Generated images are made once
per (size, format) into a small pool at the first request (a 1024x1024 JPEG costs about
10 ms of CPU to encode: not per request on the load generator), each pool image seeded, so a
run is repeatable. A request's images and pixels are in its record and the results.
"""

from __future__ import annotations

import base64
import io
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llmload.errors import ConfigError

FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
FOLDER_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
POOL = 8
"""Generated images kept per (size, format): requests draw from them."""
MAX_SIDE = 8192


@dataclass(frozen=True)
class Image:
    """One image as a request sends it."""

    url: str
    """``data:<mime>;base64,...``"""
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def parse_sizes(text: str, *, option: str = "llm-image-size") -> tuple[tuple[int, int], ...]:
    """``WxH`` or a comma list of them; anything else is one ``ConfigError`` line."""
    sizes = []
    for part in (p.strip().lower() for p in str(text).split(",")):
        width, sep, height = part.partition("x")
        if not sep or not width.isdigit() or not height.isdigit():
            raise ConfigError(f"--{option}: expected WxH (e.g. 1024x768), got {part!r}")
        w, h = int(width), int(height)
        if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
            raise ConfigError(f"--{option}: each side must be 1-{MAX_SIDE} pixels, got {part!r}")
        sizes.append((w, h))
    return tuple(sizes)


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@lru_cache(maxsize=64)
def generated(width: int, height: int, fmt: str, index: int, seed: int) -> Image:
    """Pool image ``index`` of a size and format: seeded colour blocks and noise, encoded once."""
    from PIL import Image as PILImage

    rng = random.Random(f"{seed}:{width}x{height}:{fmt}:{index}")
    small = PILImage.new("RGB", (16, 16))
    small.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(256)])
    picture = small.resize((width, height), PILImage.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format=fmt.upper(), quality=85) if fmt == "jpeg" else picture.save(out, format=fmt.upper())
    return Image(url=_data_url(FORMATS[fmt], out.getvalue()), width=width, height=height)


@lru_cache(maxsize=8)
def folder_images(path: str) -> tuple[Image, ...]:
    """Every image of a folder (by suffix), read once per process; ``ConfigError`` when none can be."""
    from PIL import Image as PILImage

    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(f"--llm-image-dir {path}: cannot read ({exc.strerror or exc})") from None
    images = []
    for name in names:
        mime = FOLDER_SUFFIXES.get(os.path.splitext(name)[1].lower())
        if mime is None:
            continue
        full = os.path.join(path, name)
        try:
            with open(full, "rb") as handle:
                data = handle.read()
            with PILImage.open(io.BytesIO(data)) as picture:
                width, height = picture.size
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--llm-image-dir {path}: {name} is not a readable image ({exc})") from None
        images.append(Image(url=_data_url(mime, data), width=width, height=height))
    if not images:
        raise ConfigError(f"--llm-image-dir {path}: no images (.jpg, .jpeg, .png, .webp) in the folder")
    return tuple(images)


@dataclass(frozen=True)
class ImageSource:
    """Where a run's images come from, validated from the options or a user class."""

    sizes: tuple[tuple[int, int], ...] = ((512, 512),)
    fmt: str = "jpeg"
    folder: str = ""
    seed: int = 0

    def draw(self, count: int, rng: random.Random) -> list[Image]:
        """``count`` images for one request."""
        if self.folder:
            pool = folder_images(self.folder)
            return [pool[rng.randrange(len(pool))] for _ in range(count)]
        return [
            generated(*self.sizes[rng.randrange(len(self.sizes))], self.fmt, rng.randrange(POOL), self.seed)
            for _ in range(count)
        ]


def source_from(*, sizes: str, fmt: str, folder: str, seed: int) -> ImageSource:
    """The run's image source; bad sizes, formats and folders are ``ConfigError`` lines."""
    fmt = (fmt or "jpeg").strip().lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--llm-image-format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if folder:
        folder_images(folder)
    return ImageSource(sizes=parse_sizes(sizes) if sizes else ((512, 512),), fmt=fmt, folder=folder, seed=seed)


def content(text: str, images: list[Image]) -> list[dict[str, Any]]:
    """A user message's content parts: the text, then each image as an ``image_url`` part."""
    return [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": i.url}} for i in images]
