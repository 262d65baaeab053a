"""SSD training augmentation and evaluation resizing for VGG-based SSD (pure graph-mode tensor functions).

Conventions: images NHWC-style [H, W, 3] RGB; boxes float32 [M, 4] (ymin, xmin, ymax, xmax) normalised by the
image height/width. Output images are float32 [h, w, 3] with VGG_MEAN_RGB subtracted.

Training follows the Caffe SSD recipe, arranged for speed:
  1. zoom-out "expand" (p=0.5): the image sits at a random place on a mean-filled canvas r times its size,
     r ~ U[1, 4]. The canvas is never built: it is a box in image coordinates that may reach outside [0, 1].
  2. Caffe's 7 batch samplers: the whole canvas, or for each min IoU in CROP_MIN_IOUS (0.1, 0.3, 0.5, 0.7,
     0.9 and 0 = any IoU, Caffe's unconstrained sampler with max_jaccard_overlap 1) up to CROP_TRIALS random
     crops of the canvas (scale ~ U[0.3, 1], aspect ~ U[0.5, 2] in canvas-normalised units, as Caffe's
     BatchSampler); a crop is acceptable when some box has IoU >= min IoU with it and at least one box keeps
     its centre strictly inside it, with positive area after clipping. All trials are drawn at once
     (vectorised, no loop); each sampler's first acceptable trial competes with the whole canvas, one picked
     uniformly among those that succeeded (as Caffe: 1/7 each when all do).
  3. horizontal flip (p=0.5), folded into the same crop.
  4. one tf.image.crop_and_resize of the decoded image does expand + crop + flip + resize: pixels outside the
     image are the extrapolation value and later become exactly the mean (0 after subtraction).
  5. photometric distortion on the small output (cheaper than on the source, same per-pixel recipe).
Boxes, labels and difficult flags are gathered with one keep mask, so they stay aligned.
"""
import numpy as np
import tensorflow.compat.v1 as tf

from nets import box_coder

VGG_MEAN_RGB = (123., 117., 104.)

EXPAND_PROB = 0.5
EXPAND_MAX_RATIO = 4.
CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9, 0.)    # 0.: the unconstrained sampler (any IoU)
CROP_SCALE_RANGE = (0.3, 1.)
CROP_ASPECT_RANGE = (0.5, 2.)
CROP_TRIALS = 50
FLIP_PROB = 0.5

# Caffe SSD distort_param; each distortion is applied with probability DISTORT_PROB.
DISTORT_PROB = 0.5
BRIGHTNESS_MAX_DELTA = 32.          # added to [0, 255] pixel values
CONTRAST_RANGE = (0.5, 1.5)         # pixels multiplied by the factor (Caffe's convertTo(alpha))
SATURATION_RANGE = (0.5, 1.5)       # HSV saturation multiplied by the factor
HUE_MAX_DELTA = 0.1                 # turns: Caffe's +-18 on OpenCV's 8-bit hue scale [0, 180)

# crop_resize_region casts images up to this size to float32 before sampling them (see there).
CAST_FIRST_MAX_PIXELS = 1_000_000

# Sampler ids reported by sample_train_geometry: 0 = whole canvas, 1..6 = CROP_MIN_IOUS, 7 = fallback.
FALLBACK_SAMPLER = len(CROP_MIN_IOUS) + 1


def _as_seed(seed):
    """None -> a fresh random [2] int64 seed; an int -> [seed, 0]; a [2] integer tensor -> itself."""
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.ndims == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    return tf.cast(seed, tf.int64)


def sample_expand_canvas(uniforms):
    """The zoom-out canvas as a box in image-normalised yxyx coordinates.

    uniforms: [4] U[0,1) values (apply, ratio, y offset, x offset). With ratio r and the image's top-left
    corner at canvas-normalised (oy, ox), oy ~ U[0, 1 - 1/r], the canvas is
    [-oy*r, -ox*r, (1-oy)*r, (1-ox)*r].
    Not applied: [0, 0, 1, 1].
    """
    apply = uniforms[0] < EXPAND_PROB
    ratio = tf.where_v2(apply, 1. + uniforms[1] * (EXPAND_MAX_RATIO - 1.), 1.)
    offset_y = uniforms[2] * (1. - 1. / ratio)
    offset_x = uniforms[3] * (1. - 1. / ratio)
    return tf.stack([-offset_y * ratio, -offset_x * ratio, (1. - offset_y) * ratio, (1. - offset_x) * ratio])


def sample_crop_candidates(uniforms):
    """Caffe BatchSampler crops in canvas-normalised yxyx coordinates.

    uniforms: [..., 4] U[0,1) values. scale s ~ U[0.3, 1]; aspect a ~ U[max(0.5, s^2), min(2, 1/s^2)]
    (so the crop fits); height s/sqrt(a), width s*sqrt(a); offsets uniform over the room left. -> [..., 4].
    """
    scale = CROP_SCALE_RANGE[0] + uniforms[..., 0] * (CROP_SCALE_RANGE[1] - CROP_SCALE_RANGE[0])
    aspect_low = tf.maximum(CROP_ASPECT_RANGE[0], tf.square(scale))
    aspect_high = tf.minimum(CROP_ASPECT_RANGE[1], 1. / tf.square(scale))
    aspect = aspect_low + uniforms[..., 1] * (aspect_high - aspect_low)
    height = tf.minimum(scale / tf.sqrt(aspect), 1.)
    width = tf.minimum(scale * tf.sqrt(aspect), 1.)
    ymin = uniforms[..., 2] * (1. - height)
    xmin = uniforms[..., 3] * (1. - width)
    return tf.stack([ymin, xmin, ymin + height, xmin + width], axis=-1)


def sample_box_zooms(rng, count):
    """[count, 2] factors (zoom_y, zoom_x) by which steps 1-2 scale a box's height and width at the output
    size, sampled in numpy (numpy Generator rng) for the anchor fit (nets/anchor_fit.py): expand r as
    sample_expand_canvas, and a crop as sample_crop_candidates, or the whole canvas once in as many times as
    there are samplers (Caffe picks among those that succeed; all do for most images). A box of height h
    becomes h / (r * crop height)."""
    ratio = np.where(rng.uniform(size=count) < EXPAND_PROB, rng.uniform(1., EXPAND_MAX_RATIO, count), 1.)
    scale = rng.uniform(*CROP_SCALE_RANGE, count)
    aspect = rng.uniform(np.maximum(CROP_ASPECT_RANGE[0], scale ** 2), np.minimum(CROP_ASPECT_RANGE[1], scale ** -2))
    whole_canvas = rng.uniform(size=count) < 1. / (len(CROP_MIN_IOUS) + 1)
    crop_h = np.where(whole_canvas, 1., np.minimum(scale / np.sqrt(aspect), 1.))
    crop_w = np.where(whole_canvas, 1., np.minimum(scale * np.sqrt(aspect), 1.))
    return np.stack([1. / (ratio * crop_h), 1. / (ratio * crop_w)], axis=1)


def canvas_to_image(crops, canvas):
    """Crops [..., 4] in canvas-normalised coordinates -> the same boxes in image-normalised coordinates."""
    size = tf.stack([canvas[2] - canvas[0], canvas[3] - canvas[1]] * 2)
    origin = tf.stack([canvas[0], canvas[1]] * 2)
    return origin + crops * size


def boxes_in_regions(boxes, regions, flip):
    """Boxes seen from each output region, clipped, with the centre rule.

    boxes [M, 4] and regions [C, 4]: image-normalised yxyx. A box b seen from region r is
    (b - r_min) / (r_max - r_min) per axis, mirrored x -> 1 - x when flip, then clipped to [0, 1].
    keep [C, M]: the unclipped centre lies strictly inside (0, 1)^2 and the clipped box has positive area.
    Returns (boxes_out [C, M, 4], keep [C, M]).
    """
    region = regions[:, None, :]
    height = region[..., 2] - region[..., 0]
    width = region[..., 3] - region[..., 1]
    ymin = (boxes[None, :, 0] - region[..., 0]) / height
    ymax = (boxes[None, :, 2] - region[..., 0]) / height
    xmin = (boxes[None, :, 1] - region[..., 1]) / width
    xmax = (boxes[None, :, 3] - region[..., 1]) / width
    xmin, xmax = tf.where_v2(flip, 1. - xmax, xmin), tf.where_v2(flip, 1. - xmin, xmax)
    centre_y = 0.5 * (ymin + ymax)
    centre_x = 0.5 * (xmin + xmax)
    inside = (centre_y > 0.) & (centre_y < 1.) & (centre_x > 0.) & (centre_x < 1.)
    clipped = tf.clip_by_value(tf.stack([ymin, xmin, ymax, xmax], axis=-1), 0., 1.)
    positive = (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
    return clipped, inside & positive


def sample_train_geometry(boxes, seed):
    """Expand + crop + flip for one image, chosen from boxes alone (no pixels needed).

    boxes: [M, 4] image-normalised yxyx (clipped to [0, 1] first). seed: [2] int64 (stateless ops).
    Returns dict: canvas [4] and region [4] (image-normalised yxyx; region may reach outside [0, 1]),
    flip (bool), sampler (int32, see FALLBACK_SAMPLER), boxes [M, 4] (the M input boxes seen from the
    chosen region), keep [M] (which of them survive; at least one when M > 0).
    The fallback (identity region, all boxes kept) is used only if no candidate keeps a box, which needs
    degenerate input boxes.
    """
    boxes = tf.clip_by_value(boxes, 0., 1.)
    seed_scalars, seed_crops = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    scalars = tf.random.stateless_uniform([5 + len(CROP_MIN_IOUS) + 1], seed_scalars)
    canvas = sample_expand_canvas(scalars[:4])
    flip = scalars[4] < FLIP_PROB
    num_samplers = len(CROP_MIN_IOUS)
    crops = sample_crop_candidates(
        tf.random.stateless_uniform([num_samplers * CROP_TRIALS, 4], seed_crops))
    # Candidate 0: the whole canvas; 1..S*T: sampler s, trial t at 1 + s*T + t; last: the identity fallback.
    regions = tf.concat([canvas[None], canvas_to_image(crops, canvas), [[0., 0., 1., 1.]]], axis=0)
    regions_boxes, keep = boxes_in_regions(boxes, regions, flip)

    min_iou = tf.constant([-1.] + [v for v in CROP_MIN_IOUS for _ in range(CROP_TRIALS)], tf.float32)
    overlaps = box_coder.iou(regions[:-1], boxes)                                    # [C-1, M]
    no_boxes = tf.equal(tf.shape(boxes)[0], 0)
    acceptable = no_boxes | (tf.reduce_any(keep[:-1], axis=1)
                             & tf.reduce_any(overlaps >= min_iou[:, None], axis=1))
    trials_ok = tf.reshape(acceptable[1:], [num_samplers, CROP_TRIALS])
    first_trial = tf.reduce_min(
        tf.where_v2(trials_ok, tf.range(CROP_TRIALS)[None], CROP_TRIALS), axis=1)
    group_ok = tf.concat([acceptable[:1], first_trial < CROP_TRIALS, [True]], axis=0)
    group_index = tf.concat([[0], 1 + tf.range(num_samplers) * CROP_TRIALS
                             + tf.minimum(first_trial, CROP_TRIALS - 1), [tf.shape(regions)[0] - 1]], axis=0)
    # Uniform among the successful samplers; the fallback (score -0.5) only when none succeeded.
    scores = tf.where_v2(group_ok, tf.concat([scalars[5:5 + num_samplers + 1], [-0.5]], axis=0), -1.)
    sampler = tf.cast(tf.argmax(scores), tf.int32)
    chosen = group_index[sampler]
    keep_chosen = tf.where_v2(tf.equal(sampler, FALLBACK_SAMPLER), tf.ones_like(keep[0]), keep[chosen])
    return {'canvas': canvas, 'region': regions[chosen], 'flip': flip, 'sampler': sampler,
            'boxes': regions_boxes[chosen], 'keep': keep_chosen}


def _crop_and_resize_box(low, high, size, out_size):
    """Edge-normalised region [low, high] of an axis of `size` pixels -> tf.image.crop_and_resize's box
    coordinates, so output pixel j samples the source at pixel-centre coordinate
    (low + (j + 0.5) / out_size * (high - low)) * size - 0.5 (half-pixel centres, like tf.image.resize)."""
    first = (low + 0.5 / out_size * (high - low)) * size - 0.5
    last = (low + (out_size - 0.5) / out_size * (high - low)) * size - 0.5
    scale = tf.maximum(size - 1., 1.)
    return first / scale, last / scale


def crop_resize_region(image, region, flip, out_shape):
    """Bilinear resample of an image-normalised yxyx region (may reach outside the image) to out_shape.

    image: [H, W, C] any real dtype (static C). Returns (pixels float32 [h, w, C] with 0 where the sample falls
    outside the image, mask float32 [h, w, C]: 1 inside, 0 outside, the same in every channel). flip mirrors
    the output left-right.
    """
    out_height, out_width = out_shape
    shape = tf.cast(tf.shape(image), tf.float32)
    xmin, xmax = tf.where_v2(flip, region[3], region[1]), tf.where_v2(flip, region[1], region[3])
    y_first, y_last = _crop_and_resize_box(region[0], region[2], shape[0], float(out_height))
    x_first, x_last = _crop_and_resize_box(xmin, xmax, shape[1], float(out_width))
    height, width = tf.shape(image)[0], tf.shape(image)[1]

    def sample(source):
        return tf.image.crop_and_resize(source[None], tf.stack([y_first, x_first, y_last, x_last])[None],
                                        box_indices=[0], crop_size=[out_height, out_width])[0]
    # The op's float32 kernel is faster than its uint8 one (0.9 against 1.2 ms to 300x300), but casting the whole
    # image costs more than that above about a megapixel (1.4 ms for 2048x1536). The samples are the same
    # either way: the op casts every pixel it reads to float32.
    pixels = tf.cond(height * width <= CAST_FIRST_MAX_PIXELS,
                     lambda: sample(tf.cast(image, tf.float32)), lambda: sample(image))
    # The same sampling on all-ones columns/rows tells exactly which samples were extrapolated. The mask is
    # their outer product over [h, w * C] (sampling C ones per column): a same-shape mask makes its product
    # with the pixels elementwise, where a [h, w, 1] one takes TensorFlow's slow broadcast (see subtract_vgg_mean).
    channels = tf.compat.dimension_value(image.shape[-1])
    rows = tf.image.crop_and_resize(tf.ones([1, height, 1, 1]), [tf.stack([y_first, 0., y_last, 1.])],
                                    box_indices=[0], crop_size=[out_height, 1])[0, :, 0, 0]
    cols = tf.image.crop_and_resize(tf.ones([1, 1, width, channels]), [tf.stack([0., x_first, 1., x_last])],
                                    box_indices=[0], crop_size=[1, out_width])[0, 0]
    mask = rows[:, None] * tf.reshape(cols, [1, out_width * channels])
    return pixels, tf.reshape(mask, [out_height, out_width, channels])


def subtract_vgg_mean(image):
    """image float32 [..., h, w, 3] (static w) minus VGG_MEAN_RGB, the same values as `image - VGG_MEAN_RGB`.

    Computed over rows of w * 3 values, minus the mean tiled w times: TensorFlow's kernel for a [3] vector
    broadcast over the last axis is the generic one, 0.42 ms for a 300x300 image on one core against 0.05 ms
    for the row form (bench/RESULTS.md, issue 9).
    """
    width, channels = (tf.compat.dimension_value(size) for size in image.shape[-2:])
    if width is None or channels != 3:
        raise ValueError(f'subtract_vgg_mean: needs RGB images of a static width, got shape {image.shape}')
    rows = tf.reshape(image, [-1, width * 3]) - np.tile(np.float32(VGG_MEAN_RGB), width)
    return tf.reshape(rows, tf.shape(image))


def sample_photometric(seed):
    """Caffe SSD distort_param draws for one image, seed [2] int64 (stateless).

    Each step happens with probability DISTORT_PROB: brightness delta d ~ U[-32, 32] (else 0), contrast
    factor c ~ U[0.5, 1.5] (else 1), saturation factor f ~ U[0.5, 1.5], hue shift h ~ U[-0.1, 0.1] turns
    (apply_saturation, apply_hue say whether they happen); contrast_first (p=0.5) picks Caffe's order.
    """
    u = tf.random.stateless_uniform([9], seed)
    applied = u[0:8:2] < DISTORT_PROB
    return {
        'brightness': tf.where_v2(applied[0], (2. * u[1] - 1.) * BRIGHTNESS_MAX_DELTA, 0.),
        'contrast': tf.where_v2(applied[1], CONTRAST_RANGE[0] + u[3] * (CONTRAST_RANGE[1] - CONTRAST_RANGE[0]),
                                1.),
        'saturation': SATURATION_RANGE[0] + u[5] * (SATURATION_RANGE[1] - SATURATION_RANGE[0]),
        'apply_saturation': applied[2],
        'hue': (2. * u[7] - 1.) * HUE_MAX_DELTA,
        'apply_hue': applied[3],
        'contrast_first': u[8] < 0.5}


def apply_photometric(image, brightness, contrast, saturation, apply_saturation, hue, apply_hue,
                      contrast_first):
    """Caffe SSD photometric distortion of a float RGB image in [0, 255] (parameters: sample_photometric).

    Order: brightness x + d, contrast x * c, saturation S * f, hue H + h when contrast_first, else
    brightness, saturation, hue, contrast. Caffe's 8-bit images saturate after every step, so values are
    clipped to [0, 255] after brightness and after contrast, and at the end when saturation or hue ran (a
    guard: their HSV round trip is not documented to stay in range); unlike Caffe, values are not rounded to
    integers. A step that does not happen (d = 0, c = 1, or not applied) is skipped: on values in [0, 255] it
    would change none, and skipping it saves a pass over the image.
    """
    def clipped(values):
        return tf.clip_by_value(values, 0., 255.)

    def step(happens, transform, values):
        return tf.cond(happens, lambda: transform(values), lambda: values)
    contrast_before = tf.where_v2(contrast_first, contrast, 1.)
    contrast_after = tf.where_v2(contrast_first, 1., contrast)
    image = step(tf.not_equal(brightness, 0.), lambda values: clipped(values + brightness), image)
    image = step(tf.not_equal(contrast_before, 1.), lambda values: clipped(values * contrast_before), image)
    image = step(apply_saturation, lambda values: tf.image.adjust_saturation(values, saturation), image)
    image = step(apply_hue, lambda values: tf.image.adjust_hue(values, hue), image)
    return step(apply_saturation | apply_hue | tf.not_equal(contrast_after, 1.),
                lambda values: clipped(values * contrast_after), image)


def distort_photometric(image, seed):
    """apply_photometric with parameters drawn by sample_photometric(seed)."""
    return apply_photometric(image, **sample_photometric(seed))


def preprocess_for_train(image, labels, boxes, difficult, out_shape=(300, 300), seed=None):
    """SSD training augmentation (see the module docstring).

    image uint8 [H, W, 3]; labels int64 [M]; boxes float32 [M, 4] normalised yxyx; difficult int64 [M];
    seed: None (random), an int or a [2] integer tensor (stateless: the same seed gives the same output).
    Returns (image float32 [h, w, 3] minus VGG_MEAN_RGB, labels [K], boxes [K, 4] in [0, 1] with positive
    area, difficult [K]); K >= 1 whenever M >= 1. Input boxes are clipped to the image first; zero-area ones
    are dropped, unless all are (then all come back, clipped: see sample_train_geometry's fallback).
    """
    seed_geometry, seed_photometric = tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), 2))
    geometry = sample_train_geometry(tf.cast(boxes, tf.float32), seed_geometry)
    pixels, mask = crop_resize_region(image, geometry['region'], geometry['flip'], out_shape)
    pixels = distort_photometric(pixels, seed_photometric)
    out_image = subtract_vgg_mean(pixels) * mask
    keep = geometry['keep']
    return (out_image, tf.boolean_mask(labels, keep), tf.boolean_mask(geometry['boxes'], keep),
            tf.boolean_mask(difficult, keep))


def resize_for_eval(image, out_shape=(300, 300)):
    """Evaluation's resize: image uint8 [H, W, 3] -> float32 pixels [h, w, 3], bilinear with half-pixel centres
    (also what the TFLite model's caller feeds it, deployment/tflite_model.py)."""
    return tf.compat.v2.image.resize(image, out_shape, method='bilinear')


def preprocess_for_eval(image, labels, boxes, difficult, out_shape=(300, 300)):
    """Evaluation: bilinear resize (half-pixel centres) to out_shape, minus VGG_MEAN_RGB.

    image uint8 [H, W, 3] -> float32 [h, w, 3]; labels, boxes (normalised, so unchanged), difficult as given.
    """
    resized = resize_for_eval(image, out_shape)
    return (subtract_vgg_mean(resized), tf.convert_to_tensor(labels), tf.convert_to_tensor(boxes),
            tf.convert_to_tensor(difficult))
