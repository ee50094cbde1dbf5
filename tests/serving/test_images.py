"""A request's image: data URLs decoded within limits checked before decoding; paths only inside the image folder
(after ``..`` and symbolic links are resolved); URLs never fetched."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from rode_lightning.serving import images as images_module
from rode_lightning.serving.errors import RequestError
from rode_lightning.serving.images import ImageLimits, load_image


def png(size=(24, 16), color=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def refused(url: str, limits: ImageLimits) -> RequestError:
    with pytest.raises(RequestError) as error:
        load_image(url, limits)
    return error.value


def test_a_data_url_gives_the_rgb_picture():
    image = load_image(data_url(png()), ImageLimits())
    assert image.mode == "RGB" and image.size == (24, 16) and image.getpixel((3, 3)) == (200, 30, 60)


def test_an_oversized_data_url_is_refused_before_it_is_decoded(monkeypatch):
    decoded = []
    monkeypatch.setattr(images_module.base64, "b64decode", lambda *args, **kwargs: decoded.append(1))
    error = refused(data_url(b"\0" * 3000), ImageLimits(max_bytes=2000))
    assert error.status == 413 and "2000 bytes" in error.message and not decoded


def test_pixels_over_the_limit_are_refused_and_a_bomb_never_decoded():
    assert refused(data_url(png((100, 100))), ImageLimits(max_pixels=5000)).status == 413
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, "PNG")  # 144 MP, a few hundred kB: over PIL's own limit too
    error = refused(data_url(buffer.getvalue()), ImageLimits(max_bytes=10 * 2**20))
    assert error.status == 413 and "pixels" in error.message


@pytest.mark.parametrize("data, words", [(b"GIF89a not really", "not a readable image"),
                                         (png()[:-30], "not a readable image")])
def test_broken_bytes_are_a_400(data, words):
    error = refused(data_url(data), ImageLimits())
    assert error.status == 400 and words in error.message


def test_only_photo_formats_are_opened():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PPM")  # PIL reads it; a photo never comes as one (nor as EPS, which PIL
    error = refused(data_url(buffer.getvalue()), ImageLimits())  # would hand to Ghostscript)
    assert error.status == 400 and "not a readable image" in error.message
    assert load_image(data_url(png()), ImageLimits()).size == (24, 16)


@pytest.mark.parametrize("url", ["http://localhost/a.png", "https://example.com/a.png", "file:///etc/passwd",
                                 "ftp://host/a.png", "HTTP://HOST/A.PNG"])
def test_urls_are_never_fetched(url, tmp_path):
    error = refused(url, ImageLimits(folder=tmp_path))
    assert error.status == 400 and "URLs are not fetched" in error.message


def test_paths_only_inside_the_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "plate.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    (folder / "inside_link.png").symlink_to(folder / "sub" / "plate.png")
    (folder / "outside_link.png").symlink_to(tmp_path / "secret.png")
    (folder / "out_dir").symlink_to(tmp_path, target_is_directory=True)
    limits = ImageLimits(folder=folder)
    assert load_image("sub/plate.png", limits).size == (24, 16)
    assert load_image(str(folder / "sub" / "plate.png"), limits).size == (24, 16)
    assert load_image("inside_link.png", limits).size == (24, 16)
    for url in ["../secret.png", "sub/../../secret.png", str(tmp_path / "secret.png"), "outside_link.png",
                "out_dir/secret.png", "/etc/passwd"]:
        error = refused(url, limits)
        assert error.status == 400 and "outside the server's image folder" in error.message, url
    assert "not a file" in refused("sub", limits).message
    assert "NUL" in refused("sub/pl\x00ate.png", limits).message
    assert "not a file" in refused("~nosuchuser/x.jpg", limits).message  # no home directories: a name in the folder
    assert "takes no image paths" in refused("sub/plate.png", ImageLimits()).message


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    (tmp_path / "big.png").write_bytes(png((300, 300)) + b"\0" * 5000)
    error = refused("big.png", ImageLimits(folder=tmp_path, max_bytes=4000))
    assert error.status == 413 and "4000 bytes" in error.message
