"""SSD loss against a numpy reference written from the paper's formula (per image, per anchor loops)."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import ssd_losses


def np_log_softmax(row):
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def np_smooth_l1(x):
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def np_reference(logits, loc, labels, target_loc, ratio=3., alpha=1., eps=0.):
    """(L_pos, L_neg, alpha * L_loc) / N_pos; per image: keep the k = floor(ratio * max(P, 1)) background
    anchors with the largest -log p(bg); smoothed targets (1 - eps) onehot + eps / C."""
    batch, num_anchors, num_classes = logits.shape
    pos = neg = loc_sum = 0.
    mined_counts = []
    for b in range(batch):
        ce = []
        for n in range(num_anchors):
            log_p = np_log_softmax(logits[b, n])
            target = np.full(num_classes, eps / num_classes)
            target[max(labels[b, n], 0)] += 1 - eps
            ce.append(-(target * log_p).sum())
        negatives = [n for n in range(num_anchors) if labels[b, n] == 0]
        negatives.sort(key=lambda n: -np_log_softmax(logits[b, n])[0], reverse=True)
        num_pos = int((labels[b] > 0).sum())
        chosen = negatives[:int(np.floor(ratio * max(num_pos, 1)))]
        mined_counts.append(len(chosen))
        pos += sum(ce[n] for n in range(num_anchors) if labels[b, n] > 0)
        neg += sum(ce[n] for n in chosen)
        loc_sum += sum(np_smooth_l1(loc[b, n] - target_loc[b, n]).sum()
                       for n in range(num_anchors) if labels[b, n] > 0)
    total_pos = (labels > 0).sum()
    if total_pos == 0:
        return dict(cross_entropy_pos=0., cross_entropy_neg=0., localization=0., total=0.), mined_counts
    out = dict(cross_entropy_pos=pos / total_pos, cross_entropy_neg=neg / total_pos,
               localization=alpha * loc_sum / total_pos)
    out['total'] = sum(out.values())
    return out, mined_counts


def random_case(seed, batch=3, num_anchors=40, num_classes=5):
    rng = np.random.RandomState(seed)
    logits = rng.normal(0, 2, (batch, num_anchors, num_classes)).astype(np.float32)
    loc = rng.normal(0, 1.5, (batch, num_anchors, 4)).astype(np.float32)
    target_loc = rng.normal(0, 1.5, (batch, num_anchors, 4)).astype(np.float32)
    labels = rng.choice([-1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], size=(batch, num_anchors)).astype(np.int64)
    labels[1] = np.where(labels[1] > 0, 0, labels[1])          # image 1: no positives
    labels[2, :3] = [1, 2, 3]                                  # image 2: few negatives available?
    labels[2, 3:] = np.where(np.arange(num_anchors - 3) % 3 == 0, 0, 4)
    return logits, loc, labels, target_loc


def tf_losses(logits, loc, labels, target_loc, **kwargs):
    with tf.Graph().as_default():
        out = ssd_losses.ssd_losses(tf.constant(logits), tf.constant(loc), tf.constant(labels),
                                    tf.constant(target_loc), **kwargs)
        with tf.Session() as sess:
            return sess.run(out)


@pytest.mark.parametrize('kwargs', [{}, dict(negative_ratio=2.5, alpha=2., label_smoothing=0.1),
                                    dict(negative_ratio=1., label_smoothing=0.3)])
def test_loss_matches_reference(kwargs):
    for seed in range(2):
        case = random_case(seed)
        got = tf_losses(*case, **kwargs)
        expected, _ = np_reference(*case, ratio=kwargs.get('negative_ratio', 3.), alpha=kwargs.get('alpha', 1.),
                                   eps=kwargs.get('label_smoothing', 0.))
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_hard_negative_counts():
    logits, _, labels, _ = random_case(3)
    with tf.Graph().as_default():
        log_probs = tf.nn.log_softmax(tf.constant(logits))
        positives = tf.reduce_sum(tf.cast(tf.constant(labels) > 0, tf.int32), axis=1)
        mask = ssd_losses.hard_negative_mask(-log_probs[..., 0], tf.equal(tf.constant(labels), 0), positives, 3.)
        with tf.Session() as sess:
            mask = sess.run(mask)
    _, expected_counts = np_reference(logits, logits[..., :4], labels, logits[..., :4])
    np.testing.assert_array_equal(mask.sum(axis=1), expected_counts)
    num_pos = (labels > 0).sum(axis=1)
    available = (labels == 0).sum(axis=1)
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(3 * np.maximum(num_pos, 1), available))
    assert num_pos[1] == 0 and mask[1].sum() == 3          # empty image: mined as if it had one positive
    assert mask[2].sum() == available[2] < 3 * num_pos[2]  # capped by the background anchors available
    assert not mask[labels != 0].any()                    # never a positive or an ignored anchor


def test_hard_negative_ties_go_to_the_lower_anchor_index():
    # Hand-worked, negative_ratio 3. Image 0: one positive (anchor 5), so k = 3 of the background anchors
    # 0-4 (losses 1, 2, 2, 2, 0.5): anchors 1, 2, 3. Image 1: no positive (mined as if one, k = 3): anchor 4
    # (0.9) first, then two of the four tied at 0.7, the lower-index anchors 0 and 1. Image 2: two positives
    # (k = 6) but only three background anchors (0, 2, 4): all three.
    losses = np.array([[1., 2., 2., 2., .5, 9.], [.7, .7, .7, .7, .9, 0.], [.1, 5., .2, 5., .3, 0.]], np.float32)
    labels = np.array([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, -1], [0, 2, 0, 3, 0, -1]])
    with tf.Graph().as_default():
        mask = ssd_losses.hard_negative_mask(tf.constant(losses), tf.constant(labels == 0),
                                             tf.constant((labels > 0).sum(axis=1), tf.int32), 3.)
        mask = tf.Session().run(mask)
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1, 0, 0], [1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0]])


def test_label_smoothing_changes_positive_cross_entropy():
    case = random_case(4)
    plain = tf_losses(*case)
    smoothed = tf_losses(*case, label_smoothing=0.2)
    assert abs(smoothed['cross_entropy_pos'] - plain['cross_entropy_pos']) > 1e-3
    assert smoothed['localization'] == pytest.approx(plain['localization'])


def test_ignored_anchors_do_not_count():
    logits, loc, labels, target_loc = random_case(5)
    before = tf_losses(logits, loc, labels, target_loc)
    ignored = labels == -1
    logits[ignored] += 50. * np.random.RandomState(0).normal(size=logits[ignored].shape)
    loc[ignored] += 100.
    after = tf_losses(logits, loc, labels, target_loc)
    for name in before:
        assert after[name] == pytest.approx(before[name], rel=1e-6)


def test_no_positives_gives_zero_and_finite_gradients():
    logits, loc, labels, target_loc = random_case(6)
    labels = np.where(labels > 0, 0, labels)
    with tf.Graph().as_default():
        logits_t, loc_t = tf.constant(logits), tf.constant(loc)
        out = ssd_losses.ssd_losses(logits_t, loc_t, tf.constant(labels), tf.constant(target_loc))
        grads = tf.gradients(out['total'], [logits_t, loc_t])
        with tf.Session() as sess:
            values, grad_values = sess.run([out, grads])
    assert all(value == 0. for value in values.values())
    assert all(np.isfinite(g).all() and not g.any() for g in grad_values)


def test_gradients_reach_positive_and_mined_anchors_only():
    logits, loc, labels, target_loc = random_case(7)
    with tf.Graph().as_default():
        logits_t, loc_t = tf.constant(logits), tf.constant(loc)
        out = ssd_losses.ssd_losses(logits_t, loc_t, tf.constant(labels), tf.constant(target_loc))
        grad_logits, grad_loc = tf.Session().run(tf.gradients(out['total'], [logits_t, loc_t]))
    touched = np.abs(grad_logits).sum(-1) > 0
    assert touched[labels > 0].all() and not touched[labels == -1].any()
    assert (np.abs(grad_loc).sum(-1) > 0)[labels > 0].all() and not grad_loc[labels <= 0].any()
