"""The one home of box math: IoU, anchor matching, encoding and decoding.

Boxes are normalised float32. Ground truth and decoded boxes are (ymin, xmin, ymax, xmax) = "yxyx";
anchors are (cy, cx, h, w) = "cychw". Encoded offsets are (ty, tx, th, tw), the SSD paper's formula with
the Caffe "variances" prior_scaling = (s_y, s_x, s_h, s_w) = (0.1, 0.1, 0.2, 0.2):
    ty = (cy - cy_a) / h_a / s_y        tx = (cx - cx_a) / w_a / s_x
    th = log(h / h_a) / s_h             tw = log(w / w_a) / s_w
decode() is the exact inverse.
"""
import numpy as np
import tensorflow.compat.v1 as tf


def cychw_to_yxyx(boxes_cychw):
    """numpy [..., 4] (cy, cx, h, w) -> [..., 4] (ymin, xmin, ymax, xmax), same dtype."""
    boxes_cychw = np.asarray(boxes_cychw)
    cy, cx, h, w = (boxes_cychw[..., i] for i in range(4))
    return np.stack([cy - h / 2., cx - w / 2., cy + h / 2., cx + w / 2.], axis=-1).astype(boxes_cychw.dtype)


def broadcast_iou_np(boxes_a, boxes_b):
    """numpy IoU of yxyx boxes_a [..., 4] with boxes_b [..., 4], broadcast against each other; float64.

    The same formula as iou() below, for evaluation code that runs outside a TF session;
    0 where the union is empty, sides clipped at 0 for inverted boxes.
    """
    boxes_a, boxes_b = np.asarray(boxes_a, np.float64), np.asarray(boxes_b, np.float64)

    def area(boxes):
        return np.clip(boxes[..., 2] - boxes[..., 0], 0., None) * np.clip(boxes[..., 3] - boxes[..., 1], 0., None)

    inter_h = np.clip(np.minimum(boxes_a[..., 2], boxes_b[..., 2]) - np.maximum(boxes_a[..., 0], boxes_b[..., 0]),
                      0., None)
    inter_w = np.clip(np.minimum(boxes_a[..., 3], boxes_b[..., 3]) - np.maximum(boxes_a[..., 1], boxes_b[..., 1]),
                      0., None)
    intersection = inter_h * inter_w
    union = area(boxes_a) + area(boxes_b) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.), 0.)


def iou(boxes_a, boxes_b):
    """Intersection over union of every pair: yxyx [M, 4] x yxyx [N, 4] -> [M, N] float32.

    IoU = |A n B| / (|A| + |B| - |A n B|); 0 where the union is empty (degenerate boxes). boxes_b may be a
    numpy array (the anchors): its columns and areas are then constants rather than ops run at every call.
    """
    ymin_a, xmin_a, ymax_a, xmax_a = tf.split(boxes_a, 4, axis=1)  # [M, 1] each
    if isinstance(boxes_b, np.ndarray):
        columns_b, maximum = np.asarray(boxes_b, np.float32).T, np.maximum
    else:
        columns_b, maximum = tf.unstack(boxes_b, axis=1), tf.maximum
    ymin_b, xmin_b, ymax_b, xmax_b = columns_b                      # [N] each
    area_b = maximum(ymax_b - ymin_b, 0.) * maximum(xmax_b - xmin_b, 0.)
    inter_h = tf.maximum(tf.minimum(ymax_a, ymax_b) - tf.maximum(ymin_a, ymin_b), 0.)
    inter_w = tf.maximum(tf.minimum(xmax_a, xmax_b) - tf.maximum(xmin_a, xmin_b), 0.)
    intersection = inter_h * inter_w
    area_a = tf.maximum(ymax_a - ymin_a, 0.) * tf.maximum(xmax_a - xmin_a, 0.)
    return tf.math.divide_no_nan(intersection, area_a + area_b - intersection)


def _mutual_best(candidates, served, forced_gt, col_best=None):
    """One round of _bipartite_match: candidates [M, K] (IoU, -1 where served or claimed), served [M] bool,
    forced_gt [K] int32 (-1 unclaimed); col_best: argmax(candidates, axis=0) when the caller has it.

    Takes every pair that is both its row's maximum (ties: lower anchor) and its column's maximum (ties:
    lower gt), with IoU > 0. Returns (served, forced_gt, done): done when every gt is served or has no
    positive IoU left unclaimed (claims only grow). A gt taken claims its row's best anchor: one scatter of
    at most M claims (no two gts take the same anchor: the anchor's column maximum is one gt).
    """
    num_gt = tf.shape(candidates)[0]
    row_best = tf.argmax(candidates, axis=1, output_type=tf.int32)          # [M] best unclaimed anchor
    if col_best is None:
        col_best = tf.argmax(candidates, axis=0, output_type=tf.int32)      # [K] best unserved gt
    has_candidate = tf.reduce_max(candidates, axis=1) > 0.
    taken = tf.logical_and(has_candidate, tf.equal(tf.gather(col_best, row_best), tf.range(num_gt)))
    taken_gts = tf.where(taken)                                             # [T, 1] int64
    forced_gt = tf.tensor_scatter_nd_update(forced_gt, tf.gather_nd(row_best, taken_gts)[:, None],
                                            tf.cast(taken_gts[:, 0], tf.int32))
    served = tf.logical_or(served, taken)
    done = tf.reduce_all(tf.logical_or(served, tf.logical_not(has_candidate)))
    return served, forced_gt, done


def _bipartite_match(overlaps, best_gt=None):
    """Caffe SSD's greedy bipartite matching of ground truths to anchors, in vectorised rounds.

    Caffe (MatchBBox): while some unserved ground truth has a positive IoU with an unclaimed anchor, take the
    first pair in the order (IoU descending, anchor index ascending, gt index ascending) among unserved gts x
    unclaimed anchors, serve the gt and claim the anchor. Each round here takes at once every pair that is
    the maximum of both its row (the gt's best unclaimed anchor, ties: lower anchor) and its column (the
    anchor's best unserved gt, ties: lower gt). Every other pair on that row or column comes later in
    Caffe's order, so Caffe's loop takes all those pairs too, and taking them first leaves its other choices
    unchanged: the result equals Caffe's exactly, ties included, for the same IoU values (only difference:
    Caffe ignores IoUs <= 1e-6, here only 0). Each round takes at least Caffe's next pair, so at most M
    rounds. The first (usually the only one: the rest sits behind a tf.cond) runs on all anchors; later ones
    (crowded scenes: up to ~10) only on the anchors that the gts left over overlap.

    overlaps: [M, N] float32 IoU, M >= 1; best_gt: argmax(overlaps, axis=0), if the caller has it.
    Returns forced_gt [N] int32: the gt that claimed each anchor, -1.
    """
    served, forced_gt, done = _mutual_best(overlaps, tf.zeros_like(overlaps[:, 0], tf.bool),
                                           -tf.ones_like(overlaps[0], tf.int32), best_gt)

    def later_rounds():
        wanted = tf.logical_and(overlaps > 0., tf.logical_not(served)[:, None])
        columns = tf.where(tf.reduce_any(wanted, axis=0))                   # [K, 1] int64, ascending
        overlaps_left = tf.gather(overlaps, columns[:, 0], axis=1)          # [M, K]

        def next_round(served, column_gt, done):
            del done  # only the loop condition reads it
            available = tf.logical_and(tf.logical_not(served)[:, None], (column_gt < 0)[None, :])
            return _mutual_best(tf.where_v2(available, overlaps_left, -1.), served, column_gt)

        _, column_gt, _ = tf.while_loop(
            lambda served, column_gt, done: tf.logical_not(done), next_round,
            (served, tf.gather_nd(forced_gt, columns), done),
            maximum_iterations=tf.shape(overlaps)[0], back_prop=False)
        return tf.tensor_scatter_nd_update(forced_gt, columns, column_gt)

    return tf.cond(done, lambda: forced_gt, later_rounds)


def match(gt_labels, gt_boxes, gt_difficult, anchors_yxyx, match_threshold=0.5, ignore_difficult=True):
    """Assign each anchor to at most one ground-truth box (SSD paper / Caffe rules), vectorised.

    1. Bipartite match: Caffe's greedy one-to-one matching (_bipartite_match), so every ground truth gets
       an anchor, even below the threshold, as long as one with positive IoU is left unclaimed; a box whose
       best anchor went to a better-overlapping box takes its next best.
    2. Threshold match: every other anchor whose best IoU is >= match_threshold goes to the ground truth
       it overlaps most (ties: the lower index).
    Difficulty plays no part in the assignment; afterwards anchors assigned to a difficult box get label
    -1 (neither positive nor negative) when ignore_difficult, else the box's label.

    Args:
      gt_labels: [M] int, 1..K. gt_boxes: [M, 4] yxyx. gt_difficult: [M] int or bool. M may be 0.
      anchors_yxyx: [N, 4] yxyx (numpy, or a tensor).
    Returns:
      labels [M+1] int64 and boxes [M+1, 4]: the ground truths' labels (-1 where ignored) and boxes, then an
      empty box (label 0, a zero box) that unmatched anchors point at; gt_index [N] int32, each anchor's row
      (labels[gt_index]: 0 background, -1 ignored).
    """
    if not isinstance(anchors_yxyx, tf.Tensor):
        anchors_yxyx = np.asarray(anchors_yxyx, np.float32)
    # The trailing empty box (IoU 0 with everything, never matched) keeps M + 1 >= 1, so no branch for M = 0,
    # and is what unmatched anchors gather, with no per-anchor select.
    gt_labels = tf.cast(gt_labels, tf.int64)
    if ignore_difficult:
        gt_labels = tf.where_v2(tf.cast(gt_difficult, tf.bool), -tf.ones_like(gt_labels), gt_labels)
    labels = tf.concat([gt_labels, tf.zeros([1], tf.int64)], axis=0)
    boxes = tf.concat([tf.cast(gt_boxes, tf.float32), tf.zeros([1, 4], tf.float32)], axis=0)
    empty_box = tf.shape(boxes)[0] - 1

    overlaps = iou(boxes, anchors_yxyx)                                   # [M+1, N]
    best_gt = tf.argmax(overlaps, axis=0, output_type=tf.int32)          # [N]
    best_gt_iou = tf.reduce_max(overlaps, axis=0)
    forced_gt = _bipartite_match(overlaps, best_gt)
    is_forced = forced_gt >= 0

    is_matched = tf.logical_or(is_forced, best_gt_iou >= match_threshold)
    gt_index = tf.where_v2(is_forced, forced_gt, tf.where_v2(is_matched, best_gt, empty_box))
    return labels, boxes, gt_index


def _box_params(boxes_yxyx):
    """yxyx [..., 4] -> (cy, cx, log h, log w) [..., 4], the box's side of the encoding."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes_yxyx, axis=-1)
    return tf.stack([(ymin + ymax) / 2., (xmin + xmax) / 2., tf.log(ymax - ymin), tf.log(xmax - xmin)], axis=-1)


def _anchor_params(anchors_cychw, prior_scaling):
    """numpy float32 (offset, scale) [N, 4], the anchors' side of the encoding: offset (cy_a, cx_a, log h_a,
    log w_a), scale (1 / (h_a s_y), 1 / (w_a s_x), 1 / s_h, 1 / s_w); computed in float64."""
    cy_a, cx_a, h_a, w_a = np.asarray(anchors_cychw, np.float64).T
    s_y, s_x, s_h, s_w = prior_scaling
    offset = np.stack([cy_a, cx_a, np.log(h_a), np.log(w_a)], axis=-1)
    scale = np.stack([1. / (h_a * s_y), 1. / (w_a * s_x), np.full_like(h_a, 1. / s_h), np.full_like(w_a, 1. / s_w)],
                     axis=-1)
    return offset.astype(np.float32), scale.astype(np.float32)


def encode(boxes_yxyx, anchors_cychw, prior_scaling):
    """yxyx boxes [..., N, 4] against numpy anchors (cy, cx, h, w) [N, 4] -> offsets (ty, tx, th, tw) [..., N, 4].

    Formula in the module docstring, as (box params - anchor offset) * anchor scale (_box_params,
    _anchor_params). Boxes need positive height and width (log of the size).
    """
    offset, scale = _anchor_params(anchors_cychw, prior_scaling)
    return (_box_params(boxes_yxyx) - offset) * scale


def decode(loc, anchors_cychw, prior_scaling):
    """Offsets (ty, tx, th, tw) [..., N, 4] + anchors (cy, cx, h, w) [N, 4] -> yxyx boxes [..., N, 4].

        cy = ty * s_y * h_a + cy_a    cx = tx * s_x * w_a + cx_a
        h = h_a * exp(th * s_h)       w = w_a * exp(tw * s_w)
    """
    anchors_cychw = tf.convert_to_tensor(anchors_cychw, tf.float32)
    ty, tx, th, tw = tf.unstack(loc, axis=-1)
    cy_a, cx_a, h_a, w_a = tf.unstack(anchors_cychw, axis=-1)
    s_y, s_x, s_h, s_w = prior_scaling
    cy = ty * s_y * h_a + cy_a
    cx = tx * s_x * w_a + cx_a
    half_h = h_a * tf.exp(th * s_h) / 2.
    half_w = w_a * tf.exp(tw * s_w) / 2.
    return tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def make_target_encoder(anchors_cychw, prior_scaling, match_threshold=0.5, ignore_difficult=True):
    """Returns encode_fn(labels [M] int64, boxes [M, 4] yxyx, difficult [M] int64) -> dict of training targets.

    target_labels [N] int64 (0 background, -1 ignored), target_loc [N, 4] float32 (ty, tx, th, tw; 0 for
    anchors without a box). Graph ops only, for tf.data map functions. encode()'s formula, taken apart so that
    the box side (logs included) runs on the M boxes and each anchor gathers its box's row: per anchor, only a
    gather, a subtraction and a product.
    """
    anchors_cychw = np.asarray(anchors_cychw, np.float32)
    anchors_yxyx = cychw_to_yxyx(anchors_cychw)
    offset, scale = _anchor_params(anchors_cychw, prior_scaling)
    num_anchors = anchors_cychw.shape[0]

    def encode_fn(labels, boxes, difficult):
        with tf.name_scope('encode_targets'):
            gt_labels, gt_boxes, gt_index = match(labels, boxes, difficult, anchors_yxyx, match_threshold,
                                                  ignore_difficult)
            matched_labels = tf.gather(gt_labels, gt_index)
            # The empty box's row stays zero (its log would be -inf); the anchors that gather it are zeroed.
            params = tf.concat([_box_params(gt_boxes[:-1]), tf.zeros([1, 4])], axis=0)    # [M+1, 4]
            has_box = tf.not_equal(matched_labels, 0)
            target_loc = tf.where_v2(has_box[:, None], (tf.gather(params, gt_index) - offset) * scale, 0.)
            matched_labels.set_shape([num_anchors])
            target_loc.set_shape([num_anchors, 4])
            return {'target_labels': matched_labels, 'target_loc': target_loc}

    return encode_fn
