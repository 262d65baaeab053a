"""Anchors: counts and hand-computed boxes (SSD paper / SSD-Tensorflow layout)."""
import math

import numpy as np
import pytest

from nets import anchors, ssd_vgg_300, ssd_vgg_512

# Anchors before each SSD300 layer: 38*38*4, 19*19*6, 10*10*6, 5*5*6, 3*3*4 (then 1*1*4).
BLOCK10_START = 5776 + 2166 + 600 + 150


@pytest.mark.parametrize('anchor_set', ['ssd_tensorflow', 'caffe'])
def test_counts(anchor_set):
    per_layer_300 = anchors.ssd_anchors_per_layer(ssd_vgg_300.default_params(anchor_set=anchor_set))
    assert [len(a) for a in per_layer_300] == [5776, 2166, 600, 150, 36, 4]
    assert anchors.ssd_anchors(ssd_vgg_300.default_params(anchor_set=anchor_set)).shape == (8732, 4)
    per_layer_512 = anchors.ssd_anchors_per_layer(ssd_vgg_512.default_params(anchor_set=anchor_set))
    assert [len(a) for a in per_layer_512] == [16384, 6144, 1536, 384, 96, 16, 4]
    assert anchors.ssd_anchors(ssd_vgg_512.default_params(anchor_set=anchor_set)).dtype == np.float32


def test_first_cell_of_block4_ssd_tensorflow_sizes():
    boxes = anchors.ssd_anchors(ssd_vgg_300.default_params())
    centre = 0.5 * 8 / 300
    expected = [
        [centre, centre, 21 / 300, 21 / 300],                                   # s_k
        [centre, centre, math.sqrt(21 * 45) / 300, math.sqrt(21 * 45) / 300],   # sqrt(s_k s_k+1)
        [centre, centre, 21 / 300 / math.sqrt(2), 21 / 300 * math.sqrt(2)],     # ratio 2 (wide)
        [centre, centre, 21 / 300 * math.sqrt(2), 21 / 300 / math.sqrt(2)],     # ratio 1/2 (tall)
        [centre, 1.5 * 8 / 300, 21 / 300, 21 / 300],                            # next cell: x + 1
    ]
    np.testing.assert_allclose(boxes[:5], expected, rtol=1e-6)
    # Row 1 starts after the 38 cells of row 0.
    np.testing.assert_allclose(boxes[38 * 4, :2], [1.5 * 8 / 300, centre], rtol=1e-6)


def test_caffe_sizes():
    boxes = anchors.ssd_anchors(ssd_vgg_300.default_params(anchor_set='caffe'))
    np.testing.assert_allclose(boxes[0, 2:], [0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(boxes[1, 2:], [math.sqrt(30 * 60) / 300] * 2, rtol=1e-6)
    # block7 first cell, a=4: ratio 3 -> h = 60 / sqrt(3), w = 60 * sqrt(3).
    np.testing.assert_allclose(boxes[5776 + 4], [0.5 * 16 / 300, 0.5 * 16 / 300,
                                                 60 / 300 / math.sqrt(3), 60 / 300 * math.sqrt(3)], rtol=1e-6)


def test_block10_and_last_anchor():
    boxes = anchors.ssd_anchors(ssd_vgg_300.default_params())
    # block10 (3x3, step 100), cell y=1, x=2, a=1.
    index = BLOCK10_START + (1 * 3 + 2) * 4 + 1
    side = math.sqrt(207 * 261) / 300
    np.testing.assert_allclose(boxes[index], [0.5, 2.5 * 100 / 300, side, side], rtol=1e-6)
    # block11 (1x1, step 300), a=3: ratio 1/2 with s_k = 261.
    np.testing.assert_allclose(boxes[-1], [0.5, 0.5, 261 / 300 * math.sqrt(2), 261 / 300 / math.sqrt(2)],
                               rtol=1e-6)


def test_ssd512_corners():
    boxes = anchors.ssd_anchors(ssd_vgg_512.default_params())
    np.testing.assert_allclose(boxes[0], [4 / 512, 4 / 512, 20.48 / 512, 20.48 / 512], rtol=1e-6)
    side = math.sqrt(460.8 * 542.72) / 512
    np.testing.assert_allclose(boxes[-3], [0.5, 0.5, side, side], rtol=1e-6)
