"""The objects of a split read back from its TFRecord shards: labels and normalised yxyx boxes per record, and
the image sizes the records give.

For the anchor fit (nets/anchor_fit.py), the converter's box counts and the choice of training's decoded-image
cache. Records are read with tf.io.tf_record_iterator and parsed with tf.train.Example in Python: a VOC-sized
split (16k records, 1.6 GB) takes a few seconds (bench/RESULTS.md), and a split larger than max_records is read
from the start of every shard in equal parts, so the sample spans the whole split.
"""
from typing import NamedTuple, Optional

import numpy as np
import tensorflow.compat.v1 as tf

from datasets import tfrecord_schema as keys
from utils.errors import UserError

MAX_RECORDS = 20000


class SplitSample(NamedTuple):
    boxes: np.ndarray               # [M, 4] float32 normalised yxyx, of the records read
    records: int                    # records read
    decoded_bytes: Optional[int]    # the whole split's images decoded to uint8 RGB (estimated from those read
                                    # when they are a sample); None when a record lacks its image size


def _quiet_record_iterator(path):
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel('ERROR')   # tf_record_iterator's deprecation notice (it is the fast reader here)
    try:
        return tf.io.tf_record_iterator(path)
    finally:
        logger.setLevel(level)


def record_objects(paths, records_per_shard=None):
    """Yields (path, labels [n] int64, boxes [n, 4] float32 yxyx normalised, pixels) for each record of the
    shards `paths`, at most records_per_shard from each (None: all); pixels: the image's height x width as the
    record gives them, 0 when it does not. UserError naming a corrupt or unreadable shard, or a record whose box
    lists differ in length."""
    for path in paths:
        try:
            for index, record in enumerate(_quiet_record_iterator(path)):
                if records_per_shard is not None and index >= records_per_shard:
                    break
                feature = tf.train.Example.FromString(record).features.feature
                labels = np.asarray(feature[keys.LABEL].int64_list.value, np.int64)
                columns = [feature[key].float_list.value for key in keys.BOX_KEYS.values()]
                if any(len(column) != len(labels) for column in columns):
                    raise UserError(f'{path}: record {index} lists {len(labels)} labels but '
                                    f'{"/".join(str(len(c)) for c in columns)} box coordinates')
                height, width = (feature[key].int64_list.value for key in (keys.HEIGHT, keys.WIDTH))
                pixels = height[0] * width[0] if height and width else 0
                yield path, labels, np.asarray(columns, np.float32).T.reshape(-1, 4), pixels
        except tf.errors.DataLossError as err:
            raise UserError(f'{path}: corrupt TFRecord shard ({err.message})') from None
        except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as err:
            raise UserError(f'{path}: cannot read ({err.message.splitlines()[0]})') from None


def split_boxes(paths, num_records, max_records=MAX_RECORDS, labels_offset=0):
    """SplitSample of the shards `paths` holding num_records records; above max_records, the first
    max_records / len(paths) records of each shard. labels_offset: only the boxes training keeps
    (label > labels_offset; datasets/label_offset.py)."""
    per_shard = None if num_records <= max_records else max(1, max_records // len(paths))
    boxes, records, pixels, sized = [], 0, 0, True
    for _, labels, record_boxes, record_pixels in record_objects(paths, per_shard):
        boxes.append(record_boxes[labels > labels_offset])
        records += 1
        pixels += record_pixels
        sized = sized and record_pixels > 0
    decoded_bytes = 3 * pixels * num_records // records if sized and records else None
    return SplitSample(np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32), records, decoded_bytes)


def count_boxes(paths, class_names):
    """class name -> boxes in the records of the shards paths, by label id (class_names[0] = 'none')."""
    counts = dict.fromkeys(class_names[1:], 0)
    for path, labels, _, _ in record_objects(paths):
        for label in labels:
            if not 0 < label < len(class_names):
                raise UserError(f'{path}: label {label} outside 1..{len(class_names) - 1}')
            counts[class_names[label]] += 1
    return counts
