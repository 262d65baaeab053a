"""Photos of today's phone cameras open without Pillow's decompression-bomb warning or refusal."""
import warnings

import pytest
from PIL import Image

import datasets.voc_reader  # noqa: F401  sets Pillow's limit, as it does for the converter and detect.py


@pytest.mark.parametrize('size', [(12000, 9000), (16320, 12240)])   # 108 MP and 200 MP phone photos
def test_a_phone_photo_is_no_decompression_bomb(size):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        Image._decompression_bomb_check(size)   # what Image.open runs on the header's size


def test_a_file_claiming_gigapixels_is_still_refused():
    with pytest.raises(Image.DecompressionBombError):
        Image._decompression_bomb_check((40000, 40000))
