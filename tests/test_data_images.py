"""load_rgb on every mode and every kind of broken file; caption cleaning; SkipCounter."""

import io
import logging

import numpy as np
import pytest
from PIL import Image, ImageFile

import data
from data import BadCaption, BadImage, SkipCounter, caption_text, clean_caption, load_rgb
from data.testing import ODD_MODES, image_bytes, random_bytes


def encode(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def test_loading_does_not_enable_truncated_images():
    assert data is not None and ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("mode", sorted(ODD_MODES))
def test_odd_modes_convert_to_rgb(mode):
    fmt = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF"}[ODD_MODES[mode]]
    image, converted_from = load_rgb(image_bytes(mode, size=(24, 20), fmt=fmt))
    assert image.mode == "RGB" and image.size == (24, 20)
    assert converted_from == mode


def test_rgb_is_not_converted(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(image_bytes())
    image, converted_from = load_rgb(path)
    assert image.mode == "RGB" and converted_from is None
    assert load_rgb(str(path))[0].tobytes() == image.tobytes()


def test_alpha_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish everywhere
    rgba[0, :, 3] = 0  # first row transparent
    rgba[1, :, 3] = 128  # second row half
    rgba[2:, :, 3] = 255
    image, mode = load_rgb(encode(Image.fromarray(rgba, "RGBA")))
    pixels = np.asarray(image).astype(int)
    assert mode == "RGBA"
    assert (pixels[0] == 255).all()
    assert np.allclose(pixels[1], [[228, 127, 127]] * 4, atol=1)
    assert (pixels[2] == [200, 0, 0]).all()
    la, mode = load_rgb(encode(Image.fromarray(rgba[..., [0, 3]], "LA")))
    assert mode == "LA" and (np.asarray(la)[0] == 255).all() and (np.asarray(la)[2] == 200).all()


def test_palette_transparency_is_composited():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    image.putpixel((0, 0), 0)
    loaded, mode = load_rgb(encode(image, transparency=0))
    assert mode == "P"
    assert loaded.getpixel((0, 0)) == (255, 255, 255) and loaded.getpixel((1, 1)) == (10, 20, 30)


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    image, mode = load_rgb(encode(Image.fromarray(values)))
    assert mode == "I;16"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_float_and_int32_are_scaled():
    floats = np.array([[0.0, 0.5, 1.0]], np.float32)
    image, _ = load_rgb(encode(Image.fromarray(floats), "TIFF"))
    assert np.asarray(image)[0, :, 0].tolist() == [0, 128, 255]
    wide = np.array([[0, 1000, 65535]], np.int32)
    image, mode = load_rgb(encode(Image.fromarray(wide), "TIFF"))
    assert mode == "I" and np.asarray(image)[0, :, 0].tolist() == [0, 4, 255]
    narrow = np.array([[0, 100, 200]], np.int32)
    assert np.asarray(load_rgb(encode(Image.fromarray(narrow), "TIFF"))[0])[0, :, 0].tolist() == [0, 100, 200]


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded, _ = load_rgb(encode(image, "JPEG", exif=exif))
    assert loaded.size == (20, 40)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (image_bytes(size=(64, 64), fmt="JPEG")[:400], "truncated_image"),
        (image_bytes(size=(64, 64), fmt="PNG")[:-60], "truncated_image"),
        (random_bytes(), "corrupt_image"),
        (b"", "corrupt_image"),
        (b"\x89PNG\r\n\x1a\n" + random_bytes(200), "corrupt_image"),
    ],
)
def test_broken_files_raise_bad_image(payload, reason):
    with pytest.raises(BadImage) as caught:
        load_rgb(payload)
    assert caught.value.reason == reason


def test_tiny_and_missing(tmp_path):
    with pytest.raises(BadImage, match="tiny_image"):
        load_rgb(image_bytes(size=(100, 7)), min_side=8)
    assert load_rgb(image_bytes(size=(100, 8)), min_side=8)[0].size == (100, 8)
    with pytest.raises(BadImage, match="missing_image"):
        load_rgb(tmp_path / "nope.png")


def test_caption_cleaning():
    assert clean_caption("  a\tred \n\n circle\u00a0 ") == "a red circle"
    assert clean_caption("cafe\u0301\x00x") == "café x"
    assert caption_text(b"\xef\xbb\xbf hello ") == "hello"
    assert caption_text("  ok ") == "ok"
    for raw, reason in [
        (None, "missing_caption"),
        (b"", "empty_caption"),
        (" \t\n", "empty_caption"),
        (b"caf\xe9", "bad_caption_encoding"),
        ("bad \udce9", "bad_caption_encoding"),
    ]:
        with pytest.raises(BadCaption) as caught:
            caption_text(raw)
        assert caught.value.reason == reason


def test_skip_counter(caplog):
    counter = SkipCounter()
    assert str(counter) == "skipped 0; converted 0" and counter.total == 0
    with caplog.at_level(logging.WARNING, logger="data"):
        counter.add("corrupt_image", "a")
        counter.add("corrupt_image", "b")
        counter.add("corrupt_image", "a")  # the same item read again (second epoch)
        counter.add("empty_caption")
    assert [r.getMessage().split(":")[1].split()[0] for r in caplog.records] == [
        "corrupt_image",
        "empty_caption",
    ]
    for mode, key in [("P", "x"), ("P", "y"), ("CMYK", "z"), ("P", "x"), ("P", "w")]:
        counter.convert(mode, key)
    assert counter.total == 3
    assert counter.as_dict() == {"skipped": {"corrupt_image": 2, "empty_caption": 1},
                                 "converted": {"CMYK": 1, "P": 3}}  # fmt: skip
    assert str(counter) == "skipped 3 (corrupt_image=2, empty_caption=1); converted 4 (CMYK=1, P=3)"

    other = SkipCounter()
    other.add("corrupt_image", "b")  # already counted above
    other.add("corrupt_image", "c")
    other.add("tiny_image", "d")
    other.add("empty_caption")
    assert counter.merge(other) is counter
    assert counter.skipped == {"corrupt_image": 3, "empty_caption": 2, "tiny_image": 1}
    assert counter.total == 6
