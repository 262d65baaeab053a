"""box_coder against a numpy reference written from the SSD paper's rules, and hand-built cases."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import box_coder, ssd_vgg_300

PRIOR_SCALING = (0.1, 0.1, 0.2, 0.2)


def run(fetches, feed_dict=None):
    with tf.Graph().as_default():
        tensors = fetches()
        with tf.Session() as sess:
            return sess.run(tensors, feed_dict)


def np_iou(box_a, box_b):
    """Jaccard overlap of two yxyx boxes: area(A n B) / area(A u B)."""
    inter_h = max(0., min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]))
    inter_w = max(0., min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]))
    inter = inter_h * inter_w
    union = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1]) + (box_b[2] - box_b[0]) * (box_b[3] - box_b[1]) - inter
    return inter / union if union > 0 else 0.


def np_match(labels, boxes, difficult, anchors_yxyx, threshold=0.5, ignore_difficult=True):
    """Reference matching, one box and one anchor at a time (paper: best anchor per box + IoU >= threshold)."""
    overlaps = np.array([[np_iou(b, a) for a in anchors_yxyx] for b in boxes]).reshape(len(boxes), -1)
    owner = -np.ones(len(anchors_yxyx), int)
    forced_iou = -np.ones(len(anchors_yxyx))
    for m in range(len(boxes)):                      # forced: best anchor, highest claimant IoU wins
        best = int(np.argmax(overlaps[m]))
        if overlaps[m, best] > 0 and overlaps[m, best] > forced_iou[best]:
            owner[best], forced_iou[best] = m, overlaps[m, best]
    for n in range(len(anchors_yxyx)):
        if owner[n] < 0 and len(boxes) and overlaps[:, n].max() >= threshold:
            owner[n] = int(np.argmax(overlaps[:, n]))
    out = np.zeros(len(anchors_yxyx), np.int64)
    for n, m in enumerate(owner):
        if m >= 0:
            out[n] = -1 if (ignore_difficult and difficult[m]) else labels[m]
    return out, owner


def np_encode(box, anchor_cychw):
    cy, cx, h, w = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    cy_a, cx_a, h_a, w_a = anchor_cychw
    return [(cy - cy_a) / h_a / 0.1, (cx - cx_a) / w_a / 0.1, np.log(h / h_a) / 0.2, np.log(w / w_a) / 0.2]


def random_boxes(rng, count, min_size=0.02):
    corner = rng.uniform(0, 0.9, size=(count, 2))
    size = rng.uniform(min_size, 0.6, size=(count, 2))
    return np.concatenate([corner, np.minimum(corner + size, 1.)], axis=1).astype(np.float32)


def test_iou_matches_reference():
    rng = np.random.RandomState(0)
    boxes_a, boxes_b = random_boxes(rng, 7), random_boxes(rng, 11)
    boxes_b[0] = [0.3, 0.3, 0.3, 0.5]                # zero area: IoU 0, not NaN
    got = run(lambda: box_coder.iou(tf.constant(boxes_a), tf.constant(boxes_b)))
    expected = [[np_iou(a, b) for b in boxes_b] for a in boxes_a]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.all(got[:, 0] == 0)
    got_np = box_coder.broadcast_iou_np(boxes_a[:, None, :], boxes_b[None, :, :])
    np.testing.assert_allclose(got_np, expected, atol=1e-6)
    assert np.all(got_np[:, 0] == 0)


def match_case(labels, boxes, difficult, anchors_yxyx, **kwargs):
    def graph():
        return box_coder.match(tf.constant(labels, tf.int64), tf.constant(boxes, tf.float32, shape=[len(labels), 4]),
                               tf.constant(difficult, tf.int64), tf.constant(anchors_yxyx, tf.float32), **kwargs)
    return run(graph)


# Four unit-row anchors on a line: IoUs below are exact binary fractions.
LINE_ANCHORS = np.array([[0, 0, 1, 1], [0, 1, 1, 2], [0, 2, 1, 3], [0, 3, 1, 4]], np.float32) / 4.


def test_forced_match_below_threshold_and_threshold_is_inclusive():
    # Box 0 overlaps anchor 0 by 0.25 (forced); box 1 overlaps anchor 2 by exactly 0.5 (>=) and is forced there.
    boxes = np.array([[0, 0, 0.25, 0.0625], [0, 0.5, 0.25, 0.625]], np.float32)
    labels, matched_boxes, matched_iou = match_case([3, 5], boxes, [0, 0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [3, 0, 5, 0])
    np.testing.assert_allclose(matched_iou, [0.25, 0, 0.5, 0])
    np.testing.assert_allclose(matched_boxes, [boxes[0], [0] * 4, boxes[1], [0] * 4])


def test_exact_threshold_without_forcing():
    # Box overlaps anchors 1 and 2 by 0.5 each: anchor 1 (first max) is forced, anchor 2 meets >= 0.5.
    labels, _, _ = match_case([2], [[0, 0.25, 0.25, 0.75]], [0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [0, 2, 2, 0])
    labels, _, _ = match_case([2], [[0, 0.25, 0.25, 0.75]], [0], LINE_ANCHORS, match_threshold=0.51)
    np.testing.assert_array_equal(labels, [0, 2, 0, 0])


def test_conflicting_forced_matches_higher_iou_wins():
    # Both boxes' best anchor is anchor 0; box 1 has the higher IoU (0.5 vs 0.25) and takes it.
    boxes = [[0, 0, 0.25, 0.0625], [0, 0, 0.25, 0.125]]
    labels, _, matched_iou = match_case([1, 2], boxes, [0, 0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [2, 0, 0, 0])
    assert matched_iou[0] == pytest.approx(0.5)


def test_tie_goes_to_lower_index():
    same = [0, 0.25, 0.25, 0.5]
    labels, _, _ = match_case([4, 7], [same, same], [0, 0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [0, 4, 0, 0])


def test_many_boxes_per_anchor_take_the_best_overlap():
    anchors_yxyx = np.array([[0, 0, 1, 1], [0.5, 0.5, 1, 1]], np.float32)
    boxes = [[0, 0, 0.9, 0.9], [0, 0, 0.95, 0.95], [0, 0, 0.8, 0.8], [0.5, 0.5, 1, 1]]
    labels, _, matched_iou = match_case([1, 2, 3, 4], boxes, [0, 0, 0, 0], anchors_yxyx)
    np.testing.assert_array_equal(labels, [2, 4])
    np.testing.assert_allclose(matched_iou, [0.9025, 1.0], rtol=1e-5)


def test_difficult_boxes_are_ignored_by_best_iou():
    anchors_yxyx = np.array([[0, 0, 1, 1], [0.5, 0.5, 1, 1], [0, 0, 0.5, 0.5]], np.float32)
    boxes = [[0, 0, 0.95, 0.95], [0, 0, 0.9, 0.9], [0.5, 0.5, 1, 1]]
    # Box 0 (difficult) beats box 1 on anchor 0 -> ignored; box 2 is plain.
    labels, _, _ = match_case([1, 2, 3], boxes, [1, 0, 0], anchors_yxyx)
    np.testing.assert_array_equal(labels, [-1, 3, 0])
    labels, _, _ = match_case([1, 2, 3], boxes, [1, 0, 0], anchors_yxyx, ignore_difficult=False)
    np.testing.assert_array_equal(labels, [1, 3, 0])
    # Same boxes, box 1 difficult instead: anchor 0 goes to box 0, a plain positive.
    labels, _, _ = match_case([1, 2, 3], boxes, [0, 1, 0], anchors_yxyx)
    np.testing.assert_array_equal(labels, [1, 3, 0])


def test_no_boxes_gives_background():
    labels, matched_boxes, matched_iou = match_case([], np.zeros([0, 4]), [], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0])
    assert not matched_boxes.any() and not matched_iou.any()


def test_matching_random_boxes_on_ssd300_anchors_matches_reference():
    net = ssd_vgg_300.SSDNet()
    anchors_yxyx = box_coder.cychw_to_yxyx(net.anchors)
    rng = np.random.RandomState(1)
    for count in (1, 6, 15):
        boxes = random_boxes(rng, count)
        labels = rng.randint(1, 21, size=count)
        difficult = rng.randint(0, 2, size=count)
        got, _, _ = match_case(labels, boxes, difficult, anchors_yxyx)
        expected, _ = np_match(labels, boxes, difficult, anchors_yxyx)
        np.testing.assert_array_equal(got, expected)


def test_encode_matches_formula_and_decode_inverts_it():
    rng = np.random.RandomState(2)
    anchors_cychw = np.concatenate([rng.uniform(0.2, 0.8, (9, 2)), rng.uniform(0.05, 0.5, (9, 2))], 1)
    anchors_cychw = anchors_cychw.astype(np.float32)
    boxes = random_boxes(rng, 9)
    loc, decoded = run(lambda: (box_coder.encode(tf.constant(boxes), anchors_cychw, PRIOR_SCALING),
                                box_coder.decode(box_coder.encode(tf.constant(boxes), anchors_cychw, PRIOR_SCALING),
                                                 anchors_cychw, PRIOR_SCALING)))
    np.testing.assert_allclose(loc, [np_encode(b, a) for b, a in zip(boxes, anchors_cychw)], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(decoded, boxes, atol=1e-5)
    # Zero offsets decode to the anchor itself.
    zero = run(lambda: box_coder.decode(tf.zeros([2, 9, 4]), anchors_cychw, PRIOR_SCALING))
    np.testing.assert_allclose(zero[1], box_coder.cychw_to_yxyx(anchors_cychw), atol=1e-6)


def test_target_encoder_on_ssd300():
    net = ssd_vgg_300.SSDNet()
    boxes = np.array([[0.1, 0.2, 0.5, 0.45], [0.6, 0.6, 0.95, 0.9]], np.float32)

    def graph():
        encode_fn = net.target_encoder()
        return encode_fn(tf.constant([7, 12], tf.int64), tf.constant(boxes), tf.constant([0, 1], tf.int64))
    targets = run(graph)
    labels, loc, scores = targets['target_labels'], targets['target_loc'], targets['target_scores']
    assert labels.shape == (8732,) and loc.shape == (8732, 4) and scores.shape == (8732,)
    anchors_yxyx = box_coder.cychw_to_yxyx(net.anchors)
    expected_labels, owner = np_match([7, 12], boxes, [0, 1], anchors_yxyx)
    np.testing.assert_array_equal(labels, expected_labels)
    assert (labels == 7).sum() > 1 and (labels == -1).sum() > 1
    for n in np.flatnonzero(owner >= 0):
        np.testing.assert_allclose(loc[n], np_encode(boxes[owner[n]], net.anchors[n]), rtol=1e-4, atol=1e-4)
    assert not loc[owner < 0].any()
    np.testing.assert_allclose(scores[labels == 7], [np_iou(boxes[0], a) for a in anchors_yxyx[labels == 7]],
                               atol=1e-6)


def test_target_encoder_has_no_loop_and_handles_empty_images():
    net = ssd_vgg_300.SSDNet()
    with tf.Graph().as_default() as graph:
        labels = tf.placeholder(tf.int64, [None])
        boxes = tf.placeholder(tf.float32, [None, 4])
        difficult = tf.placeholder(tf.int64, [None])
        targets = net.target_encoder()(labels, boxes, difficult)
        assert not [op for op in graph.get_operations() if 'While' in op.type or op.type == 'Enter']
        with tf.Session() as sess:
            got = sess.run(targets, {labels: np.zeros([0]), boxes: np.zeros([0, 4]), difficult: np.zeros([0])})
    assert not got['target_labels'].any() and not got['target_loc'].any()
    assert np.isfinite(got['target_loc']).all()
