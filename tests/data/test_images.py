"""Which damaged image files :func:`check_image` finds: PNG by its checksums (a cut anywhere, even of the closing
chunk alone), every other format by a full decode. That every reader reports what it finds, naming the file and line,
is the reader contract's (``test_reader_contract.py``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rode_lightning.data.errors import DataFormatError
from rode_lightning.data.images import check_image


def image_bytes(image_format: str) -> bytes:
    # Noise, so that the compressed pixel data is most of the file and a cut at the end lands inside it.
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


# PNG cut at its end keeps its pixels but loses the closing chunk; JPEG cut anywhere is only seen by decoding it.
BAD_IMAGES = {
    "empty.png": (b"", "is not an image format"),
    "text.png": (b"hello", "is not an image format"),
    "cut_end.png": (image_bytes("PNG")[:-8], "is truncated or corrupt"),
    "cut_half.png": (image_bytes("PNG")[: len(image_bytes("PNG")) // 2], "is truncated or corrupt"),
    "cut.jpg": (image_bytes("JPEG")[:-40], "is truncated or corrupt"),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_unreadable_or_truncated_image_is_named(tmp_path, name):
    data, message = BAD_IMAGES[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataFormatError, match=rf"^unreadable image: .*/{name} {message}"):
        check_image(tmp_path / name)


def test_missing_image_is_named(tmp_path):
    with pytest.raises(DataFormatError, match=rf"^missing image: {tmp_path / 'gone.png'} does not exist"):
        check_image(tmp_path / "gone.png")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_good_images_are_accepted(tmp_path, image_format):
    (tmp_path / "a").write_bytes(image_bytes(image_format))
    check_image(tmp_path / "a")
    check_image(str(tmp_path / "a"))
