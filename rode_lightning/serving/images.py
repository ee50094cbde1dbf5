"""The image of a request: a data URL, or a path inside the folder the server was started with; never a URL.

A server must not fetch what a client names (http, https and file URLs are refused: the server would become a proxy
into its own network, or read its own files), nor read a file outside the folder it was given: a path is resolved
(``..`` and symbolic links followed) before it is checked to lie inside that folder. Sizes are bounded before any
work: a data URL's base64 text by its length (before decoding), a file by its size, and the decoded picture by its
pixel count (PIL's decompression-bomb limit, a small file that unpacks into gigabytes).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from rode_lightning.serving.errors import RequestError

_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<base64>;base64)?,",
                       re.ASCII)
IMAGE_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True)
class ImageLimits:
    """Attributes:
        folder: where image paths may point (``serve --image_folder``); ``None``: no paths accepted.
        max_bytes: largest encoded image (a data URL's bytes after decoding, or a file).
        max_pixels: largest decoded picture, width x height.
    """

    folder: Path | None = None
    max_bytes: int = 10 * 2**20
    max_pixels: int = 36_000_000


def load_image(url: str, limits: ImageLimits) -> Image.Image:
    """The RGB picture an ``image_url`` part names, or a :class:`RequestError` (400, or 413 for a size)."""
    if url.startswith("data:"):
        data = _data_url_bytes(url, limits)
        where = "the data URL"
    elif _SCHEME.match(url) and not re.match(r"^[a-zA-Z]:[\\/]", url):
        scheme = url.split(":", 1)[0].lower()
        raise RequestError(400, f"image_url: {scheme} URLs are not fetched; send the image as a data URL "
                                "(data:image/jpeg;base64,...) or a path inside the server's image folder")
    else:
        path = _path_inside(url, limits)
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise RequestError(413, f"image_url: {url} has {size} bytes; this server takes images up to "
                                    f"{limits.max_bytes} bytes")
        data = path.read_bytes()
        where = url
    return _decoded(data, where, limits)


def _data_url_bytes(url: str, limits: ImageLimits) -> bytes:
    match = _DATA_URL.match(url)
    if match is None or not match.group("base64"):
        raise RequestError(400, "image_url: a data URL must read data:<type>;base64,<data>")
    text = url[match.end():]
    # Checked before decoding: base64 holds 3 bytes in 4 characters.
    if len(text) > (limits.max_bytes + 2) // 3 * 4 + 4:
        raise RequestError(413, f"image_url: the data URL holds more than {limits.max_bytes} bytes, this server's "
                                "limit for an image")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "image_url: the data URL's data is not valid base64") from None


def _path_inside(url: str, limits: ImageLimits) -> Path:
    if limits.folder is None:
        raise RequestError(400, "image_url: this server takes no image paths (start it with --image_folder to "
                                "allow a folder); send the image as a data URL")
    if "\x00" in url:
        raise RequestError(400, "image_url: a path may not hold a NUL character")
    folder = limits.folder.resolve()
    try:  # no '~': a path is the folder's (relative) or absolute
        resolved = (folder / url).resolve()  # '..' and symbolic links followed before the check
    except (OSError, RuntimeError, ValueError):
        raise RequestError(400, f"image_url: {url!r} is not a path this server can read") from None
    if not resolved.is_relative_to(folder):
        raise RequestError(400, f"image_url: {url} is outside the server's image folder")
    if not resolved.is_file():
        raise RequestError(400, f"image_url: {url} is not a file in the server's image folder")
    return resolved


def _decoded(data: bytes, where: str, limits: ImageLimits) -> Image.Image:
    if len(data) > limits.max_bytes:
        raise RequestError(413, f"image_url: {where} holds {len(data)} bytes; this server takes images up to "
                                f"{limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and refuses above twice that: here both are a refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the formats photos come in: PIL would also run, for instance, Ghostscript on an EPS file.
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                if image.width * image.height > limits.max_pixels:
                    raise RequestError(413, f"image_url: {where} is {image.width}x{image.height} pixels; this server "
                                            f"takes images up to {limits.max_pixels} pixels")
                image.load()  # a truncated file fails here, not in the model
                return image.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise RequestError(413, f"image_url: {where} decodes to too many pixels (limit {limits.max_pixels})") from None
    except RequestError:
        raise
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying "not an image" or "broken"
        raise RequestError(400, f"image_url: {where} is not a readable image ({type(error).__name__}: {error})"
                           ) from None
