"""SSD augmentation: numpy references from the recipe's formulas; seeded property sweeps (one graph each)."""
import colorsys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from preprocessing import preprocessing_factory
from preprocessing import ssd_vgg_preprocessing as prep
from utils.errors import UserError

MEAN = np.array([123., 117., 104.], np.float32)
OUT = (300, 300)


def np_iou(box, boxes):
    """IoU of one yxyx box with each of boxes [M, 4]."""
    inter_h = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_w = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_h * inter_w
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def np_boxes_in_region(boxes, region, flip):
    """Reference: boxes seen from region (scaled, shifted, mirrored, clipped) and the centre-inside rule.
    Returns (clipped boxes, keep, margin = distance of each centre from the region's border)."""
    h, w = region[2] - region[0], region[3] - region[1]
    y0, y1 = (boxes[:, 0] - region[0]) / h, (boxes[:, 2] - region[0]) / h
    x0, x1 = (boxes[:, 1] - region[1]) / w, (boxes[:, 3] - region[1]) / w
    if flip:
        x0, x1 = 1 - x1, 1 - x0
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    margin = np.minimum(np.minimum(cy, 1 - cy), np.minimum(cx, 1 - cx))
    clipped = np.clip(np.stack([y0, x0, y1, x1], axis=1), 0, 1)
    keep = (margin > 0) & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, keep, margin


def sample_positions(low, high, size, out_size, flip=False):
    """Source pixel-centre coordinate sampled by each output pixel (half-pixel centres)."""
    if flip:
        low, high = high, low
    return (low + (np.arange(out_size) + 0.5) / out_size * (high - low)) * size - 0.5


def random_boxes(rng, num, allow_outside=False):
    """num boxes with sides >= 0.02; optionally reaching outside the image (the code clips them)."""
    centre = rng.uniform(0.05, 0.95, (num, 2))
    half = rng.uniform(0.01, 0.4, (num, 2))
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    return (boxes if allow_outside else np.clip(boxes, 0, 1)).astype(np.float32)


def test_eval_resize_and_exact_mean():
    image = tf.placeholder(tf.uint8, [None, None, 3])
    boxes = np.array([[0.1, 0.2, 0.5, 0.9], [0., 0., 1., 1.]], np.float32)
    labels, difficult = np.array([3, 7], np.int64), np.array([0, 1], np.int64)
    out = prep.preprocess_for_eval(image, labels, boxes, difficult, OUT)
    rng = np.random.RandomState(0)
    same_size = rng.randint(0, 256, (300, 300, 3)).astype(np.uint8)
    small = rng.randint(0, 256, (150, 200, 3)).astype(np.uint8)
    with tf.Session() as session:
        same, out_labels, out_boxes, out_difficult = session.run(out, {image: same_size})
        resized = session.run(out[0], {image: small})
    assert same.dtype == np.float32 and same.shape == (300, 300, 3)
    np.testing.assert_array_equal(same, same_size.astype(np.float32) - MEAN)
    np.testing.assert_array_equal(out_boxes, boxes)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_difficult, difficult)
    # Bilinear, half-pixel centres, edges clamped: ys/xs are source coordinates of output pixels.
    ys = np.clip(sample_positions(0., 1., 150, 300), 0, 149)
    xs = np.clip(sample_positions(0., 1., 200, 300), 0, 199)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, 149), np.minimum(x0 + 1, 199)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = small.astype(np.float64)
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    np.testing.assert_allclose(resized, top * (1 - fy) + bottom * fy - MEAN, atol=1e-2)


def test_subtract_vgg_mean_is_the_plain_subtraction():
    """The row form gives exactly image - mean, with or without a batch axis."""
    rng = np.random.RandomState(4)
    images = (rng.rand(2, 5, 7, 3) * 255).astype(np.float32)
    with tf.Session() as session:
        batch, single = session.run([prep.subtract_vgg_mean(tf.constant(images)),
                                     prep.subtract_vgg_mean(tf.constant(images[1]))])
    np.testing.assert_array_equal(batch, images - MEAN)
    np.testing.assert_array_equal(single, images[1] - MEAN)
    with pytest.raises(ValueError, match='shape'):   # a grey image would reshape, to wrong values
        prep.subtract_vgg_mean(tf.zeros([6, 4, 1]))


# A small image, cast to float32 before sampling, and one over CAST_FIRST_MAX_PIXELS, sampled from uint8.
@pytest.mark.parametrize('flip, height, width', [(False, 37, 53), (True, 37, 53), (True, 1001, 1000)])
def test_crop_resize_region_matches_bilinear_reference(flip, height, width):
    rng = np.random.RandomState(1)
    image = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
    region = np.array([-0.3, 0.2, 0.9, 1.6], np.float32)    # outside at the top and on the right
    out_shape = (24, 31)
    pixels, mask = prep.crop_resize_region(tf.constant(image), tf.constant(region), tf.constant(flip),
                                           out_shape)
    with tf.Session() as session:
        pixels, mask = session.run([pixels, mask])
    ys = sample_positions(region[0], region[2], height, out_shape[0])
    xs = sample_positions(region[1], region[3], width, out_shape[1], flip)
    inside = ((ys >= 0) & (ys <= height - 1))[:, None] & ((xs >= 0) & (xs <= width - 1))[None, :]
    np.testing.assert_array_equal(mask, np.repeat(inside[..., None], 3, axis=2).astype(np.float32))
    assert 0 < inside.sum() < inside.size
    for i, j in zip(*np.nonzero(inside)):
        y0, x0 = int(np.floor(ys[i])), int(np.floor(xs[j]))
        y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
        fy, fx = ys[i] - y0, xs[j] - x0
        img = image.astype(np.float64)
        expected = ((img[y0, x0] * (1 - fx) + img[y0, x1] * fx) * (1 - fy)
                    + (img[y1, x0] * (1 - fx) + img[y1, x1] * fx) * fy)
        # The op computes sample positions in float32: about 1e-4 pixel off near x = 1000, 0.014 in value.
        np.testing.assert_allclose(pixels[i, j], expected, atol=1e-2 if width < 100 else 3e-2)
    np.testing.assert_array_equal(pixels[~inside], 0.)


def test_geometry_sweep_follows_the_recipe():
    boxes_in = tf.placeholder(tf.float32, [None, 4])
    seed = tf.placeholder(tf.int64, [2])
    geometry = prep.sample_train_geometry(boxes_in, seed)
    rng = np.random.RandomState(2)
    samplers, flips, expanded = [], [], []
    with tf.Session() as session:
        for index in range(300):
            boxes = random_boxes(rng, rng.randint(0, 7), allow_outside=index % 3 == 0)
            if index % 10 == 5:
                boxes = np.array([[0., 0., 1., 1.]], np.float32)     # makes IoU >= 0.9 crops reachable
            out = session.run(geometry, {boxes_in: boxes, seed: [index, 7]})
            canvas, region, sampler = out['canvas'], out['region'], out['sampler']
            samplers.append(sampler)
            flips.append(out['flip'])
            ratio = canvas[2] - canvas[0]
            expanded.append(ratio > 1)
            assert 1 <= ratio <= 4 + 1e-5 and abs(canvas[3] - canvas[1] - ratio) < 1e-5
            assert canvas[0] <= 0 and canvas[1] <= 0 and canvas[2] >= 1 and canvas[3] >= 1
            assert 0 <= sampler < prep.FALLBACK_SAMPLER
            if sampler == 0:
                np.testing.assert_allclose(region, canvas, atol=1e-6)
            else:
                relative = (region - canvas[[0, 1, 0, 1]]) / ratio      # canvas-normalised crop
                height, width = relative[2] - relative[0], relative[3] - relative[1]
                assert relative.min() >= -1e-5 and relative.max() <= 1 + 1e-5
                assert 0.3 - 1e-5 <= np.sqrt(height * width) <= 1 + 1e-5
                assert 0.5 - 1e-4 <= width / height <= 2 + 1e-4
                if len(boxes):
                    min_iou = prep.CROP_MIN_IOUS[sampler - 1]
                    assert np_iou(region, np.clip(boxes, 0, 1)).max() >= min_iou - 1e-5
            expected, keep, margin = np_boxes_in_region(np.clip(boxes, 0, 1), region, out['flip'])
            np.testing.assert_allclose(out['boxes'], expected, atol=1e-5)
            clear = np.abs(margin) > 1e-5
            np.testing.assert_array_equal(out['keep'][clear], keep[clear])
            assert not len(boxes) or out['keep'].any()
    samplers = np.array(samplers)
    assert 0.38 < np.mean(flips) < 0.62 and 0.38 < np.mean(expanded) < 0.62
    # Every sampler gets used (high-IoU ones seldom succeed on small or zoomed-out boxes, as in Caffe).
    assert set(samplers) == set(range(7)) and (samplers == 0).sum() > (samplers == 5).sum()


def test_unconstrained_sampler_crops_around_a_tiny_box():
    # A 0.01 x 0.01 box has IoU < 1e-3 with every crop (area >= 0.09): the min-IoU samplers all fail, and the
    # choice is uniform between the whole canvas (0) and Caffe's unconstrained sampler (6, any IoU).
    boxes_in = tf.constant([[0.5, 0.3, 0.51, 0.31]], tf.float32)
    seed = tf.placeholder(tf.int64, [2])
    geometry = prep.sample_train_geometry(boxes_in, seed)
    assert prep.CROP_MIN_IOUS[5] == 0. and prep.FALLBACK_SAMPLER == 7
    with tf.Session() as session:
        outs = [session.run(geometry, {seed: [index, 3]}) for index in range(200)]
    samplers = np.array([out['sampler'] for out in outs])
    assert set(samplers) == {0, 6} and 70 <= (samplers == 6).sum() <= 130
    assert all(out['keep'].all() for out in outs)     # the box's centre is always inside the crop


def test_degenerate_boxes_fall_back_to_the_whole_image():
    boxes = np.array([[0.2, 0.3, 0.2, 0.6], [0.5, 0.5, 0.5, 0.5]], np.float32)   # zero area
    geometry = prep.sample_train_geometry(tf.constant(boxes), tf.constant([3, 4], tf.int64))
    with tf.Session() as session:
        out = session.run(geometry)
    assert out['sampler'] == prep.FALLBACK_SAMPLER
    np.testing.assert_array_equal(out['region'], [0, 0, 1, 1])
    assert out['keep'].all()


def test_train_sweep_shapes_alignment_and_pixels(monkeypatch):
    recorded = []
    real_geometry = prep.sample_train_geometry

    def spy(boxes, seed):
        recorded.append(real_geometry(boxes, seed))
        return recorded[-1]
    monkeypatch.setattr(prep, 'sample_train_geometry', spy)
    image = tf.placeholder(tf.uint8, [None, None, 3])
    boxes_in = tf.placeholder(tf.float32, [None, 4])
    seed = tf.placeholder(tf.int64, [2])
    identity = tf.range(1, tf.shape(boxes_in)[0] + 1, dtype=tf.int64)       # label i+1 <=> box i
    out = prep.preprocess_for_train(image, identity, boxes_in, identity % 2, OUT, seed=seed)
    assert len(recorded) == 1
    rng = np.random.RandomState(3)
    counts = []
    with tf.Session() as session:
        for index in range(200):
            height, width = rng.randint(40, 121, 2)
            # Left half dark (0), right half bright (255): grey, so only brightness/contrast move it.
            picture = np.zeros((height, width, 3), np.uint8)
            picture[:, width // 2:] = 255
            boxes = random_boxes(rng, rng.randint(0, 6))
            (pixels, labels, out_boxes, difficult), geometry = session.run(
                [out, recorded[0]], {image: picture, boxes_in: boxes, seed: [index, 11]})
            assert pixels.shape == (300, 300, 3) and pixels.dtype == np.float32
            assert len(labels) == len(out_boxes) == len(difficult)
            assert len(labels) >= min(len(boxes), 1)
            counts.append(len(labels))
            assert (out_boxes >= 0).all() and (out_boxes <= 1).all()
            assert (out_boxes[:, 2] > out_boxes[:, 0]).all() and (out_boxes[:, 3] > out_boxes[:, 1]).all()
            expected, _, _ = np_boxes_in_region(boxes, geometry['region'], geometry['flip'])
            np.testing.assert_allclose(out_boxes, expected[labels - 1], atol=1e-5)
            np.testing.assert_array_equal(difficult, labels % 2)
            assert len(set(labels)) == len(labels)
            # Pixels: outside the image exactly 0 (the mean); inside, dark/bright halves where expected.
            region = geometry['region']
            ys = sample_positions(region[0], region[2], height, 300)
            xs = sample_positions(region[1], region[3], width, 300, geometry['flip'])
            rows_in = (ys > 1e-3) & (ys < height - 1 - 1e-3)
            rows_out = (ys < -1e-3) | (ys > height - 1 + 1e-3)
            cols_out = (xs < -1e-3) | (xs > width - 1 + 1e-3)
            np.testing.assert_array_equal(pixels[rows_out], 0.)
            np.testing.assert_array_equal(pixels[:, cols_out], 0.)
            raw = pixels + MEAN
            dark = (xs > 1e-3) & (xs < width // 2 - 1.5)
            bright = (xs > width // 2 + 0.5) & (xs < width - 1 - 1e-3)
            assert raw[rows_in][:, dark].max(initial=0) <= (0 + 32) * 1.5 + 1e-3
            assert raw[rows_in][:, bright].min(initial=255) >= (255 - 32) * 0.5 - 1e-3
    assert counts.count(0) >= 10      # background-only samples went through


def test_train_is_deterministic_for_a_seed():
    rng = np.random.RandomState(4)
    picture = tf.constant(rng.randint(0, 256, (64, 80, 3)).astype(np.uint8))
    boxes = tf.constant(random_boxes(rng, 4))
    labels = tf.constant([1, 2, 3, 4], tf.int64)
    outputs = [prep.preprocess_for_train(picture, labels, boxes, labels * 0, OUT, seed=s) for s in (5, 5, 6)]
    with tf.Session() as session:
        first, again, other = session.run(outputs)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_photometric_distortion_ranges_and_frequency():
    grey = tf.fill([8, 8, 3], 128.)
    colour = tf.constant(np.random.RandomState(5).uniform(0, 255, (8, 8, 3)).astype(np.float32))
    seed = tf.placeholder(tf.int64, [2])
    outputs = [prep.distort_photometric(grey, seed), prep.distort_photometric(colour, seed)]
    unchanged = 0
    with tf.Session() as session:
        for index in range(400):
            grey_out, colour_out = session.run(outputs, {seed: [index, 0]})
            # Saturation and hue keep grey grey; brightness +-32 then contrast x[0.5, 1.5].
            assert np.ptp(grey_out) < 1e-3
            assert (128 - 32) * 0.5 - 1e-3 <= grey_out[0, 0, 0] <= (128 + 32) * 1.5 + 1e-3
            assert colour_out.min() >= 0 and colour_out.max() <= 255
            unchanged += np.allclose(grey_out, 128.)
    assert 70 <= unchanged <= 130     # grey is unchanged when brightness and contrast are skipped: p = 1/4


@pytest.mark.parametrize('contrast_first', [True, False])
def test_photometric_clips_after_brightness_as_caffe(contrast_first):
    # Caffe: 250 + 30 saturates to 255, then x 0.6 = 153 (clipping only at the end would give 168).
    params = dict(brightness=30., contrast=0.6, saturation=1., apply_saturation=tf.constant(False), hue=0.,
                  apply_hue=tf.constant(False), contrast_first=contrast_first)
    with tf.Session() as session:
        out = session.run(prep.apply_photometric(tf.constant([[[250., 10., 100.]]]), **params))
    np.testing.assert_allclose(out[0, 0], [153., 24., 78.], rtol=1e-6)


def np_photometric(rgb255, brightness, contrast, saturation, hue, contrast_first):
    """Caffe's distortion order on [0, 255] float64 pixels [..., 3], saturating after each step (colorsys HSV);
    saturation / hue None: the step does not happen."""
    image = np.clip(rgb255 + brightness, 0, 255)
    if contrast_first:
        image = np.clip(image * contrast, 0, 255)
    for index in np.ndindex(image.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*(image[index] / 255))
        s = s if saturation is None else min(s * saturation, 1.)
        h = h if hue is None else (h + hue) % 1.
        image[index] = 255 * np.array(colorsys.hsv_to_rgb(h, s, v))
    return image if contrast_first else np.clip(image * contrast, 0, 255)


def test_photometric_steps_in_caffe_order_each_happening_or_not():
    # Every combination of the four steps happening, in both orders: steps that do not happen are skipped.
    rgb = np.random.RandomState(8).uniform(0, 255, (3, 4, 3))
    rgb[0, 0] = [250., 10., 100.]                 # saturates under brightness and contrast
    cases = [(brightness, contrast, saturation, hue, contrast_first)
             for brightness in (0., 30.) for contrast in (1., 0.6, 1.4) for saturation in (None, 1.4)
             for hue in (None, -0.08) for contrast_first in (True, False)]
    with tf.Session() as session:
        outs = session.run([prep.apply_photometric(
            tf.constant(rgb, tf.float32), brightness=brightness, contrast=contrast, saturation=saturation or 1.,
            apply_saturation=tf.constant(saturation is not None), hue=hue or 0., apply_hue=tf.constant(hue is not None),
            contrast_first=tf.constant(contrast_first)) for brightness, contrast, saturation, hue, contrast_first in cases])
    for case, out in zip(cases, outs):
        np.testing.assert_allclose(out, np_photometric(rgb, *case), atol=0.05, err_msg=str(case))
        assert out.min() >= 0 and out.max() <= 255


def test_hsv_adjustments_hold_on_the_0_255_scale():
    # distort_photometric runs saturation and hue on [0, 255] values: check against colorsys per pixel.
    rgb = np.random.RandomState(6).uniform(0, 1, (4, 5, 3))
    scaled = tf.constant((rgb * 255).astype(np.float32))
    with tf.Session() as session:
        hue, saturation = session.run([tf.image.adjust_hue(scaled, 0.07),
                                       tf.image.adjust_saturation(scaled, 1.3)])
    for (i, j), _ in np.ndenumerate(rgb[..., 0]):
        h, s, v = colorsys.rgb_to_hsv(*rgb[i, j])
        np.testing.assert_allclose(hue[i, j], 255 * np.array(colorsys.hsv_to_rgb((h + 0.07) % 1, s, v)),
                                   atol=0.05)
        np.testing.assert_allclose(saturation[i, j],
                                   255 * np.array(colorsys.hsv_to_rgb(h, min(s * 1.3, 1), v)), atol=0.05)


def test_factory():
    assert preprocessing_factory.get_preprocessing('ssd_300_vgg', True) is prep.preprocess_for_train
    assert preprocessing_factory.get_preprocessing('ssd_512_vgg', False) is prep.preprocess_for_eval
    with pytest.raises(UserError, match=r'^--preprocessing_name=resnet: no such preprocessing \(known: ssd_300_vgg, '
                                        r'ssd_512_vgg\)$'):
        preprocessing_factory.get_preprocessing('resnet', True)
