"""apply_labels_offset: labels shifted down by the offset, boxes whose label falls to 0 or below dropped."""
import numpy as np
import tensorflow.compat.v1 as tf

from datasets.label_offset import apply_labels_offset


def run(labels, boxes, difficult, offset):
    with tf.Graph().as_default(), tf.Session() as session:
        return session.run(apply_labels_offset(tf.constant(labels, tf.int64), tf.constant(boxes, tf.float32),
                                               tf.constant(difficult, tf.int64), offset))


def test_shifts_labels_and_drops_boxes_below_one():
    boxes = [[0.1, 0.1, 0.2, 0.2], [0.2, 0.2, 0.4, 0.4], [0.3, 0.3, 0.6, 0.6]]
    labels, kept, difficult = run([1, 3, 2], boxes, [0, 1, 0], 1)
    assert labels.tolist() == [2, 1] and difficult.tolist() == [1, 0]
    np.testing.assert_array_equal(kept, np.array(boxes[1:], np.float32))


def test_zero_offset_keeps_everything_and_empty_input_stays_empty():
    labels, kept, difficult = run([4, 1], [[0, 0, 1, 1], [0, 0, 0.5, 0.5]], [0, 0], 0)
    assert labels.tolist() == [4, 1] and kept.shape == (2, 4) and difficult.tolist() == [0, 0]
    labels, kept, difficult = run(np.zeros([0], np.int64), np.zeros([0, 4]), np.zeros([0], np.int64), 2)
    assert labels.shape == (0,) and kept.shape == (0, 4) and difficult.shape == (0,)
