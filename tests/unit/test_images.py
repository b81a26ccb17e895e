"""Images of vision chat requests: sizes, generated pools, folders, content parts, and their figures."""

from __future__ import annotations

import base64
import io
import random

import pytest
from PIL import Image as PILImage

from llmload import images
from llmload.errors import ConfigError
from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord


def decoded(url: str) -> PILImage.Image:
    return PILImage.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1])))


def test_sizes_and_their_errors():
    assert images.parse_sizes("512x512, 1024X768") == ((512, 512), (1024, 768))
    for bad, message in (
        ("512", "expected WxH"),
        ("0x10", "each side"),
        ("axb", "expected WxH"),
        ("9000x10", "each side"),
    ):
        with pytest.raises(ConfigError, match=message):
            images.parse_sizes(bad)


def test_generated_images_are_seeded_sized_and_pooled():
    source = images.source_from(sizes="64x48", fmt="png", folder="", seed=7)
    first = source.draw(3, random.Random(1))
    assert first == source.draw(3, random.Random(1))  # the same seed draws the same images
    assert all((i.width, i.height, i.pixels) == (64, 48, 3072) for i in first)
    assert first[0].url.startswith("data:image/png;base64,") and decoded(first[0].url).size == (64, 48)
    pool = {images.generated(64, 48, "png", k, 7).url for k in range(images.POOL)}
    assert len(pool) == images.POOL  # distinct pictures
    assert images.generated(64, 48, "png", 0, 7) is images.generated(64, 48, "png", 0, 7)  # encoded once
    with pytest.raises(ConfigError, match="--llm-image-format"):
        images.source_from(sizes="", fmt="bmp", folder="", seed=0)


def test_folder_images_and_bad_folders(tmp_path):
    PILImage.new("RGB", (30, 20), (10, 20, 30)).save(tmp_path / "a.png")
    PILImage.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    source = images.source_from(sizes="", fmt="", folder=str(tmp_path), seed=0)
    drawn = source.draw(20, random.Random(3))
    assert {(i.width, i.height) for i in drawn} == {(30, 20), (8, 8)}
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    for folder, message in (
        (tmp_path / "missing", "cannot read"),
        (empty, "no images"),
        (broken, "x.png is not a readable image"),
    ):
        with pytest.raises(ConfigError, match=message) as caught:
            images.source_from(sizes="", fmt="", folder=str(folder), seed=0)
        assert "\n" not in str(caught.value)


def test_content_parts_and_the_group_figures():
    picture = images.generated(56, 28, "jpeg", 0, 0)
    assert images.content("What is this?", [picture]) == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": picture.url}},
    ]
    store = MetricsStore()
    for count in (1, 3, 0):
        record = RequestRecord(
            backend="b",
            model="m",
            user_class="U",
            endpoint="/v1/chat/completions",
            t_send=0.0,
            start_wall=0.0,
            token_times=[0.1, 0.2],
            completion_tokens=2,
        )
        record.images, record.image_pixels = count, count * picture.pixels
        store.record(record)
    body = group_body(next(iter(store.groups.values())), slo=Slo.of(store))
    assert body["images"] == {
        "requests": 2,
        "images": 4,
        "pixels": 4 * 56 * 28,
        "images_per_request": 2.0,
        "pixels_per_image": 56 * 28,
    }
