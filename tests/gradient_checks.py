"""Comparing SSD300-VGG gradients computed two ways (e.g. clones against one clone, two conv6 forms)."""
import numpy as np


def assert_gradients_match(names, got, expected):
    """Each gradient in `got` equals its counterpart in `expected` (lists in the order of the variable `names`):
    the norm of their difference within 1% of the gradient's.

    Not element by element, because the two computations round differently (a batch split over clones, another
    conv6 form) and now and then a ReLU or max-pool input within round-off of its switch goes the other way in
    one of them: 3 of 60 runs of tests/test_clones.py once saw conv1's gradients differ by up to 0.6% of their
    largest value, and about 1 run in 10 a conv6 output channel's ReLU flipped at one pixel (182 of 73728
    elements of its weight gradient off, by up to 5x). TensorFlow's CPU backward kernels in the VGG blocks are
    not deterministic either. Perturbing the input images by 1e-6 of their values, far more than round-off, changed
    each gradient by under 0.7% of its norm over 25 random networks, conv1_1's by up to 1.35%. The rule still
    fails for a clone left out (50%) or gradients summed instead of averaged (100%).
    """
    assert len(names) == len(got) == len(expected)
    for name, got_value, expected_value in zip(names, got, expected):
        assert np.linalg.norm(got_value - expected_value) <= 1e-2 * np.linalg.norm(expected_value), name
