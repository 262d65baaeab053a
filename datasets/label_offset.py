"""SSD-Tensorflow's --labels_offset: record labels shifted down before training (and evaluation).

Why: SSD-Tensorflow (like TF-Slim's classification scripts) lets a dataset whose records number their classes
from some offset be trained without re-converting it; the label k of the records becomes k - labels_offset,
and a box whose label falls to 0 (background) or below belongs to no trained class and is dropped. Training
and evaluation must apply the same offset, so train_ssd_network.py records it in model_config.json.
"""
import tensorflow.compat.v1 as tf


def apply_labels_offset(labels, boxes, difficult, labels_offset):
    """(labels - labels_offset, boxes, difficult), keeping only the boxes whose shifted label is >= 1.

    labels [M] int64, boxes [M, 4] (any box layout, e.g. yxyx normalised), difficult [M] int64;
    labels_offset: python int >= 0. Returns tensors of [M'] / [M', 4] / [M'] with M' <= M, in input order.
    """
    shifted = labels - tf.cast(labels_offset, labels.dtype)
    keep = shifted > 0
    return tf.boolean_mask(shifted, keep), tf.boolean_mask(boxes, keep), tf.boolean_mask(difficult, keep)


def offset_then_preprocess(preprocess_fn, labels_offset):
    """preprocess_fn(image, labels, boxes, difficult, **kwargs) run on apply_labels_offset's output, so the
    augmentation (random crops keep boxes by overlap) and everything after it see only the trained classes.
    Training and evaluation both wrap their preprocessing with it."""
    def offset_preprocess(image, labels, boxes, difficult, **kwargs):
        labels, boxes, difficult = apply_labels_offset(labels, boxes, difficult, labels_offset)
        return preprocess_fn(image, labels, boxes, difficult, **kwargs)
    return offset_preprocess
