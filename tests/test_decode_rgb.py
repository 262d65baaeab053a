"""Served images decoded as the converter stores them (utils/inference_model.decode_rgb): a PNG's transparency
composited on white, gray, palette and 16-bit PNGs as RGB; checked against numpy from the compositing formula."""
import io

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from utils import inference_model


def _encoded(image, image_format='PNG'):
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def _decoded(data):
    with tf.Graph().as_default():
        encoded = tf.placeholder(tf.string, [])
        decoded = inference_model.decode_rgb(encoded)
        with tf.Session() as session:
            return session.run(decoded, {encoded: data})


def _on_white(rgb, alpha):
    """rgb' = a rgb + (1 - a) 255, a = alpha / 255, rounded."""
    a = alpha.astype(np.float64)[..., None] / 255.
    return np.round(rgb.astype(np.float64) * a + 255. * (1. - a)).astype(np.uint8)


RNG = np.random.RandomState(3)
RGB = RNG.randint(0, 256, (17, 23, 3)).astype(np.uint8)
ALPHA = RNG.randint(0, 256, (17, 23)).astype(np.uint8)
ALPHA[:4] = 0          # fully transparent rows: pure white, whatever colour the pixels hold
ALPHA[-4:] = 255       # opaque rows: the pixels as they are


def test_rgba_png_is_composited_on_white():
    rgba = Image.fromarray(np.dstack([RGB, ALPHA]), 'RGBA')
    decoded = _decoded(_encoded(rgba))
    np.testing.assert_array_equal(decoded, _on_white(RGB, ALPHA))
    assert (decoded[:4] == 255).all()


def test_gray_with_alpha_png_is_composited_on_white():
    gray = RGB[..., 0]
    decoded = _decoded(_encoded(Image.fromarray(np.dstack([gray, ALPHA]), 'LA')))
    np.testing.assert_array_equal(decoded, _on_white(np.dstack([gray] * 3), ALPHA))


def test_palette_png_with_a_transparent_entry_is_white_there():
    indices = (RGB[..., 0] % 4).astype(np.uint8)
    palette = [10, 20, 30, 200, 0, 0, 0, 150, 0, 0, 0, 90]
    image = Image.fromarray(indices, 'P')
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.info['transparency'] = 0          # entry 0 transparent
    decoded = _decoded(_encoded(image))
    colours = np.array(palette, np.uint8).reshape(4, 3)
    expected = np.where((indices == 0)[..., None], 255, colours[indices]).astype(np.uint8)
    np.testing.assert_array_equal(decoded, expected)


def test_opaque_gray_and_16_bit_pngs_become_rgb():
    gray = RGB[..., 1]
    np.testing.assert_array_equal(_decoded(_encoded(Image.fromarray(gray, 'L'))), np.dstack([gray] * 3))
    deep = (RNG.randint(0, 65536, (9, 11))).astype(np.uint16)
    decoded = _decoded(_encoded(Image.fromarray(deep)))
    expected = np.round(deep * (255. / 65535.))
    assert decoded.shape == (9, 11, 3)
    assert np.abs(decoded.astype(np.float64) - expected[..., None]).max() <= 1


@pytest.mark.parametrize('image_format', ['JPEG', 'BMP'])
def test_other_formats_decode_as_before(image_format):
    data = _encoded(Image.fromarray(RGB, 'RGB'), image_format)
    with tf.Graph().as_default(), tf.Session() as session:
        plain = session.run(tf.io.decode_image(data, channels=3, expand_animations=False))
    np.testing.assert_array_equal(_decoded(data), plain)
