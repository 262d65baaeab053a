"""SSD multibox loss: softmax cross-entropy with hard negative mining + smooth L1 on positives.

    L = (L_conf_pos + L_conf_neg + alpha * L_loc) / N_pos

N_pos = number of positive anchors (label > 0) in the whole batch; all components are 0 when the
batch has none (never NaN). A clone, which sees a slice of the batch, is given N_pos / (number of clones)
instead (`normalizer`), so that the mean of the clones' losses is the whole batch's loss. Anchors
labelled -1 (ignored, e.g. difficult boxes) count in no term.

Hard negative mining, per image i: the background anchors (label 0) are ranked by their background
cross-entropy -log p(background) and the k_i highest are kept, with
    k_i = min(floor(negative_ratio * max(P_i, 1)), number of background anchors of image i)
where P_i is the image's positive count. An image with no positives is mined as if it had one
(negative_ratio negatives), so background-only images still train the background class; ranking
ties break towards the lower anchor index.

Cross-entropy targets with label smoothing eps over C classes: q = (1 - eps) * onehot(label) + eps / C,
for positives and mined negatives alike; the ranking uses the unsmoothed -log p(background).
Smooth L1 (beta 1): 0.5 x^2 if |x| < 1 else |x| - 0.5, summed over (ty, tx, th, tw).
"""
import tensorflow.compat.v1 as tf


def smooth_l1(x):
    """Elementwise smooth L1 (Huber, beta 1): 0.5 x^2 where |x| < 1, |x| - 0.5 elsewhere."""
    abs_x = tf.abs(x)
    return tf.where(abs_x < 1., 0.5 * tf.square(x), abs_x - 0.5)


def hard_negative_mask(background_loss, is_negative, num_positives, negative_ratio):
    """Per image, True for the k_i background anchors with the highest background loss (see module doc).

    background_loss [B, N] float, is_negative [B, N] bool, num_positives [B] int32 -> [B, N] bool.
    One top_k of the batch's largest k_i picks them (its ties come lower index first, as the module doc
    asks): cheaper than ranking all N anchors, which costs two full sorts.
    """
    score = tf.where(is_negative, tf.stop_gradient(background_loss),
                     tf.fill(tf.shape(background_loss), float('-inf')))
    wanted = tf.cast(tf.floor(negative_ratio * tf.cast(tf.maximum(num_positives, 1), tf.float32)), tf.int32)
    available = tf.reduce_sum(tf.cast(is_negative, tf.int32), axis=1)
    num_negatives = tf.minimum(wanted, available)                                      # [B]
    _, hardest = tf.math.top_k(score, k=tf.reduce_max(num_negatives))                 # [B, K], sorted
    chosen = tf.range(tf.shape(hardest)[1])[None] < num_negatives[:, None]              # row b: its first k_b
    row = tf.broadcast_to(tf.range(tf.shape(hardest)[0])[:, None], tf.shape(hardest))
    return tf.scatter_nd(tf.stack([row, hardest], axis=-1), chosen, tf.shape(score, out_type=tf.int32))


def ssd_losses(logits, localisations, target_labels, target_loc,
               negative_ratio=3.0, alpha=1.0, label_smoothing=0.0, normalizer=None):
    """SSD loss components (module doc). Nothing is added to tf.losses collections.

    Args:
      logits: [B, N, C] float32. localisations: [B, N, 4] predicted (ty, tx, th, tw).
      target_labels: [B, N] int (0 background, -1 ignored, 1..C-1 classes). target_loc: [B, N, 4].
      normalizer: scalar, what the sums are divided by (default: these B images' positive count).
    Returns:
      dict of scalar float32: 'cross_entropy_pos', 'cross_entropy_neg', 'localization' (alpha included),
      'total' (their sum), each already divided by the positive count (or `normalizer`).
    """
    with tf.name_scope('ssd_losses'):
        labels = tf.cast(target_labels, tf.int32)
        num_classes = tf.shape(logits)[-1]
        is_positive = labels > 0
        is_negative = tf.equal(labels, 0)

        log_probs = tf.nn.log_softmax(logits)
        onehot = tf.one_hot(tf.maximum(labels, 0), num_classes, dtype=logits.dtype)
        soft_targets = onehot * (1. - label_smoothing) + label_smoothing / tf.cast(num_classes, logits.dtype)
        cross_entropy = -tf.reduce_sum(soft_targets * log_probs, axis=-1)                  # [B, N]

        num_positives = tf.reduce_sum(tf.cast(is_positive, tf.int32), axis=1)              # [B]
        mined = hard_negative_mask(-log_probs[..., 0], is_negative, num_positives, negative_ratio)

        total_positives = tf.cast(tf.reduce_sum(num_positives) if normalizer is None else normalizer, logits.dtype)
        # Zero (not NaN) when the batch has no positives: every term is scaled by has_positives.
        has_positives = tf.cast(total_positives > 0, logits.dtype)
        scale = has_positives / tf.maximum(total_positives, 1.)

        def masked_sum(values, mask):
            return tf.reduce_sum(tf.where(mask, values, tf.zeros_like(values)))

        loc_loss = tf.reduce_sum(smooth_l1(localisations - target_loc), axis=-1)          # [B, N]
        cross_entropy_pos = tf.multiply(masked_sum(cross_entropy, is_positive), scale, name='cross_entropy_pos')
        cross_entropy_neg = tf.multiply(masked_sum(cross_entropy, mined), scale, name='cross_entropy_neg')
        localization = tf.multiply(alpha * masked_sum(loc_loss, is_positive), scale, name='localization')
        total = tf.add_n([cross_entropy_pos, cross_entropy_neg, localization], name='total')
        return {'cross_entropy_pos': cross_entropy_pos, 'cross_entropy_neg': cross_entropy_neg,
                'localization': localization, 'total': total}
