"""box_coder against a numpy reference written from the SSD paper and Caffe's MatchBBox rules, and hand-built cases."""
import numpy as np
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


def np_greedy_bipartite(overlaps):
    """Caffe SSD's bipartite matching (MatchBBox), one pair per iteration: among unserved ground truths x
    unclaimed anchors take the highest positive IoU, scanning anchors in order and, within an anchor, the
    ground truths in order (first strict maximum wins). overlaps [M, N] -> owner [N] (gt index or -1)."""
    pairs = np.array(overlaps, np.float64).T.copy()        # [N, M]: row-major argmax = Caffe's scan order
    owner = -np.ones(pairs.shape[0], int)
    for _ in range(pairs.shape[1]):
        anchor, gt = np.unravel_index(np.argmax(pairs), pairs.shape)
        if pairs[anchor, gt] <= 0:
            break
        owner[anchor] = gt
        pairs[anchor, :] = 0.
        pairs[:, gt] = 0.
    return owner


def np_match(labels, boxes, difficult, anchors_yxyx, threshold=0.5, ignore_difficult=True):
    """Reference matching (paper + Caffe): greedy bipartite, then each other anchor with best IoU >= threshold."""
    overlaps = np.array([[np_iou(b, a) for a in anchors_yxyx] for b in boxes]).reshape(len(boxes), -1)
    owner = np_greedy_bipartite(overlaps) if len(boxes) else -np.ones(len(anchors_yxyx), int)
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
    got_constant_b = run(lambda: box_coder.iou(tf.constant(boxes_a), boxes_b))   # numpy anchors: constant columns
    np.testing.assert_allclose(got_constant_b, expected, atol=1e-6)
    got_np = box_coder.broadcast_iou_np(boxes_a[:, None, :], boxes_b[None, :, :])
    np.testing.assert_allclose(got_np, expected, atol=1e-6)
    assert np.all(got_np[:, 0] == 0)


def match_case(labels, boxes, difficult, anchors_yxyx, **kwargs):
    """match() on constants -> each anchor's (label [N], box [N, 4]): its row of match's tables."""
    def graph():
        return box_coder.match(tf.constant(labels, tf.int64), tf.constant(boxes, tf.float32, shape=[len(labels), 4]),
                               tf.constant(difficult, tf.int64), tf.constant(anchors_yxyx, tf.float32), **kwargs)
    table_labels, table_boxes, gt_index = run(graph)
    assert table_labels[-1] == 0 and not table_boxes[-1].any()     # the empty box, for unmatched anchors
    return table_labels[gt_index], table_boxes[gt_index]


# Four unit-row anchors on a line: IoUs below are exact binary fractions.
LINE_ANCHORS = np.array([[0, 0, 1, 1], [0, 1, 1, 2], [0, 2, 1, 3], [0, 3, 1, 4]], np.float32) / 4.


def test_forced_match_below_threshold_and_threshold_is_inclusive():
    # Box 0 overlaps anchor 0 by 0.25 (forced); box 1 overlaps anchor 2 by exactly 0.5 (>=) and is forced there.
    boxes = np.array([[0, 0, 0.25, 0.0625], [0, 0.5, 0.25, 0.625]], np.float32)
    labels, matched_boxes = match_case([3, 5], boxes, [0, 0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [3, 0, 5, 0])
    np.testing.assert_allclose(matched_boxes, [boxes[0], [0] * 4, boxes[1], [0] * 4])


def test_exact_threshold_without_forcing():
    # Box overlaps anchors 1 and 2 by 0.5 each: anchor 1 (first max) is forced, anchor 2 meets >= 0.5.
    labels, _ = match_case([2], [[0, 0.25, 0.25, 0.75]], [0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [0, 2, 2, 0])
    labels, _ = match_case([2], [[0, 0.25, 0.25, 0.75]], [0], LINE_ANCHORS, match_threshold=0.51)
    np.testing.assert_array_equal(labels, [0, 2, 0, 0])


def test_conflicting_forced_matches_higher_iou_wins():
    # Both boxes' best anchor is anchor 0; box 1 has the higher IoU (0.5 vs 0.25) and takes it. Box 0
    # overlaps no other anchor, so it stays unmatched.
    boxes = [[0, 0, 0.25, 0.0625], [0, 0, 0.25, 0.125]]
    labels, matched_boxes = match_case([1, 2], boxes, [0, 0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [2, 0, 0, 0])
    np.testing.assert_allclose(matched_boxes[0], boxes[1])


def test_loser_of_a_conflict_takes_its_next_best_anchor():
    # Anchor 0: box 0 IoU 1, box 1 IoU 0.8 -> box 0. Box 1 then takes anchor 1 (IoU 0.125, below 0.5).
    labels, _ = match_case([1, 2], [[0, 0, 0.25, 0.25], [0, 0, 0.25, 0.3125]], [0, 0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [1, 2, 0, 0])


def test_tie_goes_to_lower_index():
    # Identical boxes equal to anchor 1: box 0 takes it (lower gt index); box 1 overlaps no other anchor.
    same = [0, 0.25, 0.25, 0.5]
    labels, _ = match_case([4, 7], [same, same], [0, 0], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [0, 4, 0, 0])
    # Box spanning anchors 1 and 2 equally, twice: box 0 takes anchor 1 (lower anchor), box 1 anchor 2.
    wide = [0, 0.25, 0.25, 0.75]
    labels, _ = match_case([4, 7], [wide, wide], [0, 0], LINE_ANCHORS, match_threshold=0.6)
    np.testing.assert_array_equal(labels, [0, 4, 7, 0])


def bipartite(overlaps):
    return run(lambda: box_coder._bipartite_match(tf.constant(overlaps, tf.float32)))


def test_bipartite_is_caffe_greedy_not_first_proposal():
    # Greedy: (g0, a0) 0.9, then (g1, a1) 0.7, then (g2, a2) 0.3. A "best proposal wins" round would give
    # a1 to g2 (its best, 0.5) while g1 (which lost a0) waits, ending with g1 on a2.
    overlaps = [[0.9, 0.1, 0.], [0.8, 0.7, 0.05], [0., 0.5, 0.3]]
    np.testing.assert_array_equal(bipartite(overlaps), [0, 1, 2])
    np.testing.assert_array_equal(np_greedy_bipartite(overlaps), [0, 1, 2])


def test_bipartite_equals_caffe_greedy_with_many_ties():
    rng = np.random.RandomState(4)
    for _ in range(40):
        num_gt, num_anchors = rng.randint(1, 7), rng.randint(1, 20)
        overlaps = rng.randint(0, 4, size=(num_gt, num_anchors)) / 4.      # exact values, many ties and zeros
        np.testing.assert_array_equal(bipartite(overlaps), np_greedy_bipartite(overlaps), str(overlaps))


def test_many_boxes_per_anchor_take_the_best_overlap():
    anchors_yxyx = np.array([[0, 0, 1, 1], [0.5, 0.5, 1, 1]], np.float32)
    boxes = [[0, 0, 0.9, 0.9], [0, 0, 0.95, 0.95], [0, 0, 0.8, 0.8], [0.5, 0.5, 1, 1]]
    labels, matched_boxes = match_case([1, 2, 3, 4], boxes, [0, 0, 0, 0], anchors_yxyx)
    np.testing.assert_array_equal(labels, [2, 4])
    np.testing.assert_allclose(matched_boxes, [boxes[1], boxes[3]])


def test_difficult_boxes_are_ignored_by_best_iou():
    anchors_yxyx = np.array([[0, 0, 1, 1], [0.5, 0.5, 1, 1], [0, 0, 0.5, 0.5]], np.float32)
    boxes = [[0, 0, 0.95, 0.95], [0, 0, 0.9, 0.9], [0.5, 0.5, 1, 1]]
    # Bipartite: box 2 -> anchor 1 (IoU 1), box 0 -> anchor 0 (0.9025 > 0.81), box 1 -> anchor 2 (0.309).
    labels, _ = match_case([1, 2, 3], boxes, [1, 0, 0], anchors_yxyx)
    np.testing.assert_array_equal(labels, [-1, 3, 2])
    labels, _ = match_case([1, 2, 3], boxes, [1, 0, 0], anchors_yxyx, ignore_difficult=False)
    np.testing.assert_array_equal(labels, [1, 3, 2])
    labels, _ = match_case([1, 2, 3], boxes, [0, 1, 0], anchors_yxyx)
    np.testing.assert_array_equal(labels, [1, 3, -1])


def test_no_boxes_gives_background():
    labels, matched_boxes = match_case([], np.zeros([0, 4]), [], LINE_ANCHORS)
    np.testing.assert_array_equal(labels, [0, 0, 0, 0])
    assert not matched_boxes.any()


SSD300_ANCHORS_YXYX = box_coder.cychw_to_yxyx(ssd_vgg_300.SSDNet().anchors)


def test_crowded_boxes_sharing_a_best_anchor_both_get_one():
    # Both 14x12-pixel boxes lie inside the 21x21 anchor 2028 (IoU 8/21 each, a tie): box 0 takes it, box 1
    # its next best (IoU 0.381, anchor 2030); neither reaches 0.5, so without the bipartite rule box 1 had none.
    boxes = np.array([[100, 100, 114, 112], [101, 104, 115, 116]], np.float32) / 300.
    labels, _ = match_case([1, 2], boxes, [0, 0], SSD300_ANCHORS_YXYX)
    assert np.flatnonzero(labels == 1).tolist() == [2028] and (labels == 2).sum() == 1
    np.testing.assert_array_equal(labels, np_match([1, 2], boxes, [0, 0], SSD300_ANCHORS_YXYX)[0])


def crowded_boxes(rng, count):
    """count small boxes (6-18 px at 300) packed into a 39x39-pixel area: many share a best anchor."""
    corner = rng.uniform(0.45, 0.52, size=(count, 2))
    return np.concatenate([corner, corner + rng.uniform(0.02, 0.06, size=(count, 2))], axis=1).astype(np.float32)


def test_matching_random_boxes_on_ssd300_anchors_matches_reference():
    rng = np.random.RandomState(1)
    cases = [(random_boxes(rng, count), False) for count in (1, 6, 15)]
    cases += [(crowded_boxes(rng, count), True) for count in (8, 20, 30)]
    for boxes, crowded in cases:
        count = len(boxes)
        labels = np.arange(1, count + 1)                    # distinct: a label names its box
        difficult = rng.randint(0, 2, size=count)
        plain, _ = match_case(labels, boxes, difficult, SSD300_ANCHORS_YXYX, ignore_difficult=False)
        expected, _ = np_match(labels, boxes, difficult, SSD300_ANCHORS_YXYX, ignore_difficult=False)
        np.testing.assert_array_equal(plain, expected)
        assert set(plain[plain > 0]) == set(labels)         # every box has at least one anchor
        if crowded:                                         # and some needed the bipartite rule to get one
            best = np.argmax([[np_iou(b, a) for a in SSD300_ANCHORS_YXYX] for b in boxes], axis=1)
            assert len(set(best)) < count
        ignoring, _ = match_case(labels, boxes, difficult, SSD300_ANCHORS_YXYX)
        owner_difficult = (plain > 0) & difficult[np.maximum(plain, 1) - 1].astype(bool)
        np.testing.assert_array_equal(ignoring, np.where(owner_difficult, -1, plain))


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
    assert sorted(targets) == ['target_labels', 'target_loc']
    labels, loc = targets['target_labels'], targets['target_loc']
    assert labels.shape == (8732,) and loc.shape == (8732, 4)
    expected_labels, owner = np_match([7, 12], boxes, [0, 1], SSD300_ANCHORS_YXYX)
    np.testing.assert_array_equal(labels, expected_labels)
    assert (labels == 7).sum() > 1 and (labels == -1).sum() > 1
    for n in np.flatnonzero(owner >= 0):
        np.testing.assert_allclose(loc[n], np_encode(boxes[owner[n]], net.anchors[n]), rtol=1e-4, atol=1e-4)
    assert not loc[owner < 0].any()


def test_target_encoder_runs_in_tf_data_map_and_handles_empty_images():
    net = ssd_vgg_300.SSDNet()
    crowded = np.array([[100, 100, 114, 112], [101, 104, 115, 116]], np.float32) / 300.
    with tf.Graph().as_default():
        dataset = tf.data.Dataset.from_generator(
            lambda: iter([(np.zeros([0], np.int64), np.zeros([0, 4], np.float32), np.zeros([0], np.int64)),
                          (np.array([1, 2]), crowded, np.array([0, 0]))]),
            output_types=(tf.int64, tf.float32, tf.int64), output_shapes=([None], [None, 4], [None]))
        targets = tf.data.make_one_shot_iterator(dataset.map(net.target_encoder())).get_next()
        with tf.Session() as sess:
            empty, two = sess.run(targets), sess.run(targets)
    assert not empty['target_labels'].any() and not empty['target_loc'].any()
    assert (two['target_labels'] == 1).sum() == 1 and (two['target_labels'] == 2).sum() == 1
    assert np.isfinite(two['target_loc']).all()
