"""Post-processing: a hand-built case and a numpy reference of Caffe's DetectionOutput rules."""
import numpy as np
import tensorflow.compat.v1 as tf

from nets import postprocess

PRIOR_SCALING = (0.1, 0.1, 0.2, 0.2)


def yxyx_to_cychw(boxes):
    boxes = np.asarray(boxes, np.float32)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                     boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def run_detect(logits, loc, anchors_cychw, **kwargs):
    with tf.Graph().as_default():
        out = postprocess.detect(tf.constant(logits, tf.float32), tf.constant(loc, tf.float32),
                                 anchors_cychw, PRIOR_SCALING, **kwargs)
        with tf.Session() as sess:
            return sess.run(out)


# Anchor boxes (yxyx); zero offsets decode to exactly these. IoU(a0, a1) = 0.905; a3 sticks out of the image.
ANCHORS_YXYX = [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9],
                [-0.1, 0.7, 0.3, 1.1], [0.6, 0.1, 0.9, 0.4]]
# Softmax probabilities (background, class 1, class 2) per anchor for image 0; image 1 is all background.
PROBS = [[[.15, .8, .05], [.22, .7, .08], [.5, .005, .495], [.3, .6, .1], [.971, .02, .009]],
         [[.998, .001, .001]] * 5]


def hand_case(**kwargs):
    logits = np.log(np.array(PROBS, np.float32))
    return run_detect(logits, np.zeros([2, 5, 4]), yxyx_to_cychw(ANCHORS_YXYX), **kwargs)


def test_hand_built_case():
    out = hand_case(keep_top_k=10)
    # Kept, by score: c1 a0 .8 (suppresses c1 a1 .7), c1 a3 .6, c2 a2 .495 (c1 a2 .005 below 0.01), c2 a3 .1,
    # c2 a1 .08 (suppresses c2 a0 .05), c1 a4 .02 (c2 a4 .009 below 0.01).
    np.testing.assert_array_equal(out['num_detections'], [6, 0])
    np.testing.assert_allclose(out['detection_scores'][0, :6], [.8, .6, .495, .1, .08, .02], rtol=1e-5)
    np.testing.assert_array_equal(out['detection_classes'][0, :6], [1, 1, 2, 2, 2, 1])
    clipped_a3 = [0., 0.7, 0.3, 1.]
    np.testing.assert_allclose(out['detection_boxes'][0, :6],
                               [ANCHORS_YXYX[0], clipped_a3, ANCHORS_YXYX[2], clipped_a3, ANCHORS_YXYX[1],
                                ANCHORS_YXYX[4]], atol=1e-6)
    assert out['detection_boxes'].shape == (2, 10, 4) and out['detection_classes'].dtype == np.int64
    assert not out['detection_scores'][:, 6:].any() and not out['detection_classes'][:, 6:].any()


def test_keep_top_k_and_per_class_top_k_before_nms():
    out = hand_case(keep_top_k=4)
    np.testing.assert_allclose(out['detection_scores'][0], [.8, .6, .495, .1], rtol=1e-5)
    # top_k=2 per class before NMS: class 1 keeps candidates a0, a1 (a1 then suppressed), so a3 never enters.
    out = hand_case(keep_top_k=10, top_k=2)
    np.testing.assert_array_equal(out['num_detections'], [3, 0])
    np.testing.assert_allclose(out['detection_scores'][0, :3], [.8, .495, .1], rtol=1e-5)


def np_decode(loc, anchors_cychw):
    cy = loc[:, 0] * 0.1 * anchors_cychw[:, 2] + anchors_cychw[:, 0]
    cx = loc[:, 1] * 0.1 * anchors_cychw[:, 3] + anchors_cychw[:, 1]
    h = anchors_cychw[:, 2] * np.exp(loc[:, 2] * 0.2)
    w = anchors_cychw[:, 3] * np.exp(loc[:, 3] * 0.2)
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)


def np_iou(a, b):
    inter = max(0., min(a[2], b[2]) - max(a[0], b[0])) * max(0., min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def np_detect(logits, loc, anchors_cychw, score_threshold, nms_threshold, top_k, keep_top_k):
    """One image: per class top_k, score > threshold, greedy NMS (IoU > threshold), best keep_top_k, clip."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    boxes = np_decode(loc, anchors_cychw)
    kept = []
    for cls in range(1, logits.shape[-1]):
        order = [n for n in np.argsort(-probs[:, cls])[:top_k] if probs[n, cls] > score_threshold]
        chosen = []
        for n in order:
            if all(np_iou(boxes[n], boxes[m]) <= nms_threshold for m in chosen):
                chosen.append(n)
        kept += [(probs[n, cls], cls, boxes[n]) for n in chosen]
    kept.sort(key=lambda item: -item[0])
    return kept[:keep_top_k]


def test_random_batch_matches_reference():
    rng = np.random.RandomState(0)
    num_anchors, num_classes = 80, 4
    centres = rng.uniform(0.1, 0.9, (num_anchors, 2))
    anchors_cychw = np.concatenate([centres, rng.uniform(0.1, 0.4, (num_anchors, 2))], 1).astype(np.float32)
    logits = rng.normal(0, 2.5, (2, num_anchors, num_classes)).astype(np.float32)
    loc = rng.normal(0, 1, (2, num_anchors, 4)).astype(np.float32)
    settings = dict(score_threshold=0.05, nms_threshold=0.45, top_k=12, keep_top_k=20)
    out = run_detect(logits, loc, anchors_cychw, **settings)
    for image in range(2):
        expected = np_detect(logits[image], loc[image], anchors_cychw, **settings)
        count = len(expected)
        assert out['num_detections'][image] == count > 10
        np.testing.assert_allclose(out['detection_scores'][image, :count], [e[0] for e in expected], rtol=1e-5)
        np.testing.assert_array_equal(out['detection_classes'][image, :count], [e[1] for e in expected])
        np.testing.assert_allclose(out['detection_boxes'][image, :count],
                                   np.clip([e[2] for e in expected], 0, 1), atol=1e-5)
