"""cxrlib.imaging: every file reads into canonical 8-bit gray, every bad file is refused
with a reason (never an unexpected exception)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlib import imaging
from cxrlib.imaging import (
    IMAGE_EXTENSIONS,
    UnreadableImageError,
    decode,
    image_info,
    is_image_file,
    read_gray,
    resize_gray,
)

from conftest import jpeg_bytes, pattern, plant_bad_files, png_bytes, save


def _assert_canonical(pixels: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(pixels, np.ndarray)
    assert pixels.dtype == np.uint8
    assert pixels.ndim == 2
    assert pixels.shape == shape


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", True),
        ("a.PNG", True),
        ("a.jpg", True),
        ("a.JPEG", True),
        ("a.bmp", True),
        ("a.tif", True),
        ("a.tiff", True),
        ("COVID-1.png", True),
        ("dir.png/a.txt", False),
        ("a.txt", False),
        ("a.xlsx", False),
        ("a.csv", False),
        ("a.png.txt", False),
        ("png", False),
        ("a", False),
    ],
)
def test_is_image_file(name: str, expected: bool) -> None:
    assert is_image_file(name) is expected
    assert is_image_file(Path(name)) is expected


def test_image_extensions_are_lower_case_with_dot() -> None:
    assert {".png", ".jpg", ".jpeg"} <= IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- good files, every mode


def test_gray_png_reads_exactly(tmp_path: Path) -> None:
    px = pattern(1, (40, 30))  # width 40, height 30: not square
    path = save(tmp_path / "g.png", px)
    out = read_gray(path)
    _assert_canonical(out, (30, 40))
    np.testing.assert_array_equal(out, px)
    assert image_info(path) == (40, 30, "L", "PNG")


def test_decode_returns_pixels_and_stored_info(tmp_path: Path) -> None:
    px = pattern(2)
    path = save(tmp_path / "rgb.png", Image.fromarray(px).convert("RGB"))
    pixels, info = decode(path)
    np.testing.assert_array_equal(pixels, px)
    assert info == (px.shape[1], px.shape[0], "RGB", "PNG")


def test_16bit_gray_is_rescaled_by_min_max(tmp_path: Path) -> None:
    # a 12-bit DICOM conversion stored in 16 bits: values 0..4095
    values = np.linspace(0, 4095, 48 * 48).round().astype(np.uint16).reshape(48, 48)
    path = save(tmp_path / "dicom16.png", Image.fromarray(values))
    width, height, mode, fmt = image_info(path)
    assert (width, height, fmt) == (48, 48, "PNG")
    assert mode.startswith("I")  # I;16 (or I in older Pillow): a high-bit mode
    out = read_gray(path)
    _assert_canonical(out, (48, 48))
    assert out.min() == 0 and out.max() == 255
    assert out[0, 0] == 0 and out[-1, -1] == 255
    # min..max rescale, not a fixed /256 (which would leave everything below 16)
    expected = np.round(values.astype(np.float64) * 255.0 / 4095.0).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotonic


def test_16bit_with_offset_range_uses_its_own_min_and_max(tmp_path: Path) -> None:
    values = np.full((20, 20), 1000, np.uint16)
    values[5:10, 5:10] = 3000
    values[0, 0] = 2000
    out = read_gray(save(tmp_path / "offset16.png", Image.fromarray(values)))
    assert out[0, 1] == 0 and out[6, 6] == 255 and out[0, 0] == 128


def test_constant_16bit_image_is_black_not_an_error(tmp_path: Path) -> None:
    out = read_gray(save(tmp_path / "flat16.png", Image.fromarray(np.full((16, 16), 777, np.uint16))))
    _assert_canonical(out, (16, 16))
    assert not out.any()


def test_32bit_tiff_is_rescaled(tmp_path: Path) -> None:
    values = (np.arange(32 * 32, dtype=np.int32) * 1000).reshape(32, 32)
    path = save(tmp_path / "i32.tif", Image.fromarray(values))
    assert image_info(path)[2] in ("I", "I;32", "I;32S")
    out = read_gray(path)
    _assert_canonical(out, (32, 32))
    assert out.min() == 0 and out.max() == 255


def test_rgb_copy_of_gray_reads_as_the_gray_image(tmp_path: Path) -> None:
    px = pattern(3)
    out = read_gray(save(tmp_path / "rgb.png", Image.fromarray(px).convert("RGB")))
    _assert_canonical(out, px.shape)
    np.testing.assert_array_equal(out, px)


def test_colour_uses_itu_601_luma(tmp_path: Path) -> None:
    rgb = np.zeros((4, 3, 3), np.uint8)
    rgb[:, 0] = (255, 0, 0)
    rgb[:, 1] = (0, 255, 0)
    rgb[:, 2] = (0, 0, 255)
    out = read_gray(save(tmp_path / "colours.png", Image.fromarray(rgb, "RGB")))
    _assert_canonical(out, (4, 3))
    # L = 0.299 R + 0.587 G + 0.114 B
    assert abs(int(out[0, 0]) - 76) <= 1
    assert abs(int(out[0, 1]) - 150) <= 1
    assert abs(int(out[0, 2]) - 29) <= 1


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    px = pattern(4)
    alpha = np.zeros_like(px)
    alpha[:, ::2] = 255  # half the pixels fully transparent
    rgba = np.dstack([px, px, px, alpha])
    path = save(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA"))
    assert image_info(path)[2] == "RGBA"
    out = read_gray(path)
    _assert_canonical(out, px.shape)
    np.testing.assert_array_equal(out, px)  # transparent pixels keep their gray value


def test_la_drops_alpha(tmp_path: Path) -> None:
    px = pattern(5)
    la = Image.merge("LA", (Image.fromarray(px), Image.fromarray(np.full_like(px, 7))))
    path = save(tmp_path / "la.png", la)
    assert image_info(path)[2] == "LA"
    np.testing.assert_array_equal(read_gray(path), px)


def test_palette_image_reads_through_its_palette(tmp_path: Path) -> None:
    index = (np.arange(30 * 20) % 16).astype(np.uint8).reshape(20, 30)
    image = Image.fromarray(index, "P")
    levels = [i * 17 for i in range(16)]
    image.putpalette([v for level in levels for v in (level, level, level)])
    path = save(tmp_path / "palette.png", image)
    assert image_info(path)[2] == "P"
    out = read_gray(path)
    _assert_canonical(out, (20, 30))
    np.testing.assert_array_equal(out, np.array(levels, np.uint8)[index])


def test_bilevel_image(tmp_path: Path) -> None:
    px = np.zeros((16, 16), np.uint8)
    px[:, 8:] = 255
    path = save(tmp_path / "bw.png", Image.fromarray(px).convert("1"))
    assert image_info(path)[2] == "1"
    np.testing.assert_array_equal(read_gray(path), px)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    px = pattern(6, 64)
    path = save(tmp_path / "cmyk.jpg", Image.fromarray(px).convert("RGB").convert("CMYK"), "JPEG", quality=95)
    assert image_info(path)[2:] == ("CMYK", "JPEG")
    out = read_gray(path)
    _assert_canonical(out, (64, 64))
    assert np.abs(out.astype(int) - px.astype(int)).mean() < 6  # not inverted, not black
    assert np.corrcoef(out.ravel(), px.ravel())[0, 1] > 0.98


def test_jpeg_named_png_is_sniffed(tmp_path: Path) -> None:
    px = pattern(7)
    path = tmp_path / "really-a-jpeg.png"
    path.write_bytes(jpeg_bytes(px, quality=95))
    assert image_info(path) == (px.shape[1], px.shape[0], "L", "JPEG")
    out = read_gray(path)
    _assert_canonical(out, px.shape)
    assert np.abs(out.astype(int) - px.astype(int)).mean() < 4


def test_png_named_jpg_is_sniffed(tmp_path: Path) -> None:
    px = pattern(8)
    path = tmp_path / "really-a-png.jpg"
    path.write_bytes(png_bytes(px))
    assert image_info(path)[3] == "PNG"
    np.testing.assert_array_equal(read_gray(path), px)


@pytest.mark.parametrize(("fmt", "ext"), [("BMP", ".bmp"), ("TIFF", ".tif")])
def test_other_gray_formats(tmp_path: Path, fmt: str, ext: str) -> None:
    px = pattern(9)
    path = save(tmp_path / f"img{ext}", px, fmt)
    np.testing.assert_array_equal(read_gray(path), px)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    px = np.zeros((20, 40), np.uint8)  # landscape: height 20, width 40
    px[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(tmp_path / "phone.jpg", px, "JPEG", quality=95, exif=exif)
    assert image_info(path)[:2] == (40, 20)  # stored size
    out = read_gray(path)
    _assert_canonical(out, (40, 20))  # displayed: portrait
    # after a clockwise turn the stored left half is at the top
    assert out[:18].mean() > 200 and out[22:].mean() < 50


def test_large_image_above_pillow_bomb_warning(large_png: Path) -> None:
    default_limit = Image.MAX_IMAGE_PIXELS
    assert 12000 * 9000 > default_limit  # really above Pillow's default warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape
        assert image_info(large_png) == (12000, 9000, "L", "PNG")
        out = read_gray(large_png)
    _assert_canonical(out, (9000, 12000))
    assert out[0, 0] == 30 and out[2000, 4000] == 200 and out[6000, 9000] == 120
    assert Image.MAX_IMAGE_PIXELS == default_limit  # Pillow's global left as it was


def test_image_above_max_pixels_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_PIXELS is documented as "images above this many pixels are refused"."""
    path = save(tmp_path / "big.png", pattern(10, 40))  # 1,600 pixels
    monkeypatch.setattr(imaging, "MAX_PIXELS", 1_000)
    with pytest.raises(UnreadableImageError, match="larger than"):
        read_gray(path)


def test_image_far_above_max_pixels_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path / "big.png", pattern(10, 40))  # 1,600 pixels
    monkeypatch.setattr(imaging, "MAX_PIXELS", 100)
    with pytest.raises(UnreadableImageError, match="larger than"):
        read_gray(path)


def test_pillow_global_limit_restored_after_errors(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(UnreadableImageError):
        read_gray(tmp_path / "x.png")
    assert Image.MAX_IMAGE_PIXELS == before


# --------------------------------------------------------------------------- bad files


def test_every_bad_kind_raises_unreadable_with_a_reason(tmp_path: Path) -> None:
    bad = plant_bad_files(tmp_path)
    assert len(bad) == 6
    for path in bad:
        for reader in (read_gray, decode):
            with pytest.raises(UnreadableImageError) as info:
                reader(path)
            assert str(info.value).strip(), path
            assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [
        ("empty.png", "empty file"),
        ("text.png", "not an image"),
        ("page.png", "not an image"),
        ("random.jpg", "not an image"),
        ("truncated.png", "truncated or corrupt"),
        ("truncated.jpg", "truncated or corrupt"),
    ],
)
def test_bad_file_reasons(tmp_path: Path, suffix: str, reason: str) -> None:
    plant_bad_files(tmp_path)
    with pytest.raises(UnreadableImageError, match=reason):
        read_gray(tmp_path / f"bad-{suffix}")


def test_unreadable_is_a_value_error() -> None:
    assert issubclass(UnreadableImageError, ValueError)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match="cannot read file"):
        read_gray(tmp_path / "missing.png")
    with pytest.raises(UnreadableImageError):
        image_info(tmp_path / "missing.png")


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_truncation_anywhere_gives_unreadable(tmp_path: Path, kind: str, fraction: float) -> None:
    data = png_bytes(pattern(11, 64)) if kind == "png" else jpeg_bytes(pattern(11, 64))
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(UnreadableImageError):
        read_gray(path)


def test_image_info_reads_header_of_truncated_file(tmp_path: Path) -> None:
    """The header survives truncation: only decoding finds the damage (so scan must decode)."""
    data = png_bytes(pattern(12, 64))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert image_info(path) == (64, 64, "L", "PNG")
    with pytest.raises(UnreadableImageError):
        read_gray(path)


# --------------------------------------------------------------------------- resize


def test_resize_gray() -> None:
    px = pattern(13, (60, 40))
    out = resize_gray(px, 24)
    assert out.shape == (24, 24) and out.dtype == np.uint8
    same = px[:24, :24].copy()
    assert resize_gray(same, 24) is same  # already the right size: no copy
    flat = np.full((50, 50), 99, np.uint8)
    assert np.all(resize_gray(flat, 20) == 99)
    big = resize_gray(px, 120)
    assert big.shape == (120, 120)
    assert abs(float(big.mean()) - float(px.mean())) < 3


def test_resize_gray_nearest_keeps_binary_values() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[10:50, 5:30] = 255
    out = resize_gray(mask, 29, resample=Image.NEAREST)
    assert set(np.unique(out)) <= {0, 255}
