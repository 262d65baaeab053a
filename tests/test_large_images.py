"""Photos of today's phone cameras open without Pillow's decompression-bomb warning or refusal."""
import os
import subprocess
import sys

import pytest
from PIL import Image

import datasets.voc_reader  # noqa: F401  sets Pillow's limit, as it does for the converter and detect.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('size', [(12000, 9000), (16320, 12240), (24000, 20000)])   # 108, 200 MP photos; 480 MP
def test_a_phone_photo_is_no_decompression_bomb(size):
    """In a fresh process with every warning an error (-W error): what Image.open runs on the header's size."""
    checked = subprocess.run([sys.executable, '-W', 'error', '-c', 'import datasets.voc_reader; from PIL import Image; '
                              f'Image._decompression_bomb_check({size})'], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_a_file_claiming_gigapixels_is_still_refused():
    with pytest.raises(Image.DecompressionBombError):
        Image._decompression_bomb_check((40000, 40000))
