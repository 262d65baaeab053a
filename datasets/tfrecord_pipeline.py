"""tf.data input pipeline: TFRecord shards -> parsed, decoded, augmented, anchor-encoded, padded batches.

Records use the SSD-Tensorflow feature keys (datasets/tfrecord_schema.py); boxes come out normalised
yxyx float32. Order of stages: list shards -> parallel interleaved reads (each record tagged with its shard
and index there) -> shuffle -> parse + decode (in parallel; a record that fails becomes a flagged
placeholder, see datasets/bad_samples.py) -> count and drop the bad ones -> preprocess + encode (one
parallel map) -> padded batch -> prefetch. A shard that cannot be read still fails the iterator. With
cache_decoded, training decodes each record once: parse + decode come before the shuffle, and from the second
epoch on the decoded images come from memory.
"""
import dataclasses
from typing import Optional

import tensorflow.compat.v1 as tf

from datasets import bad_samples
from datasets import tfrecord_schema as keys
from utils.errors import UserError

_FEATURES = {
    keys.ENCODED: tf.io.FixedLenFeature((), tf.string),
    keys.LABEL: tf.io.VarLenFeature(tf.int64),
    keys.DIFFICULT: tf.io.VarLenFeature(tf.int64),
    keys.TRUNCATED: tf.io.VarLenFeature(tf.int64),
    **{key: tf.io.VarLenFeature(tf.float32) for key in keys.BOX_KEYS.values()},
}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How make_dataset reads and batches. Training (is_training) shuffles shards and records, repeats
    forever, drops the records that cannot be decoded and a last partial batch; evaluation reads the split
    once in order, keeps the last partial batch, and keeps every record: one that cannot be decoded comes
    with a blank image, 'image_ok' False and, when they could be read, its boxes. deterministic=True keeps
    every stage ordered and seeds everything (seed defaults to 0), so two datasets built alike yield identical
    batches."""
    batch_size: int
    out_shape: tuple = (300, 300)
    is_training: bool = True
    num_readers: int = 4
    num_parallel_calls: int = 4
    shuffle_buffer: int = 2048
    seed: Optional[int] = None
    deterministic: bool = False
    cache_decoded: bool = False     # training: keep the decoded records in memory after the first epoch


def _flags_or_zeros(values, num_boxes):
    """An optional per-box int64 flag: the record's values, or zeros [num_boxes] when the key is absent."""
    present = tf.not_equal(tf.size(values), 0)
    check = tf.debugging.Assert(tf.logical_or(tf.logical_not(present), tf.equal(tf.size(values), num_boxes)),
                                ['per-box flags of another length than the labels'])
    with tf.control_dependencies([check]):
        return tf.cond(present, lambda: tf.identity(values), lambda: tf.zeros([num_boxes], tf.int64))


def parse_annotations(serialized):
    """One serialized tf.train.Example -> dict: 'encoded' (the image file's bytes), labels int64 [M], boxes
    float32 [M, 4] normalised yxyx, difficult int64 [M], truncated int64 [M] (difficult/truncated default to
    0 when the record lacks them, as some older records do). Fails at run time on a malformed Example or
    box fields (coordinates, labels, flags) of unequal length."""
    features = tf.io.parse_single_example(serialized, _FEATURES)
    dense = {key: tf.sparse.to_dense(value) for key, value in features.items()
             if isinstance(value, tf.SparseTensor)}
    labels = dense[keys.LABEL]
    num_boxes = tf.shape(labels)[0]
    coordinates = [dense[key] for key in keys.BOX_KEYS.values()]
    checks = [tf.debugging.assert_equal(tf.shape(values)[0], num_boxes, message='box fields of unequal length')
              for values in coordinates]
    with tf.control_dependencies(checks):
        boxes = tf.stack(coordinates, axis=1)
    return {
        'encoded': features[keys.ENCODED],
        'labels': labels,
        'boxes': boxes,
        'difficult': _flags_or_zeros(dense[keys.DIFFICULT], num_boxes),
        'truncated': _flags_or_zeros(dense[keys.TRUNCATED], num_boxes),
    }


def _with_image(annotations, image):
    example = {key: value for key, value in annotations.items() if key != 'encoded'}
    example.update(image=image, shape=tf.shape(image, out_type=tf.int64))
    return example


def parse_example(serialized):
    """parse_annotations plus the decoded image: image uint8 [H, W, 3] (JPEG or PNG, decoded to RGB) and
    shape int64 [3] (the decoded image's H, W, 3) in place of 'encoded'."""
    annotations = parse_annotations(serialized)
    image = tf.io.decode_image(annotations['encoded'], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return _with_image(annotations, image)


def _decoded_or_flagged(record):
    """A one-element dataset: the record parsed and decoded (status OK), else its annotations with a blank
    image (BAD_IMAGE), else an empty placeholder (BAD_RECORD); 'shard', 'index' (and 'seed') kept."""
    blank = tf.zeros([1, 1, 3], tf.uint8)
    tags = {key: value for key, value in record.items() if key != 'serialized'}

    def tagged(example, status):
        return dict(example, status=tf.constant(status, tf.int32), **tags)
    empty = {'encoded': tf.constant(''), 'labels': tf.zeros([0], tf.int64), 'boxes': tf.zeros([0, 4]),
             'difficult': tf.zeros([0], tf.int64), 'truncated': tf.zeros([0], tf.int64)}
    return bad_samples.first_that_works(record, [
        lambda r: tagged(parse_example(r['serialized']), bad_samples.OK),
        lambda r: tagged(_with_image(parse_annotations(r['serialized']), blank), bad_samples.BAD_IMAGE),
        lambda r: tagged(_with_image(empty, blank), bad_samples.BAD_RECORD)])


def _prepare_fn(preprocess_fn, out_shape, encode_fn, seeded):
    """The per-example map function: preprocess, encode. seeded: preprocessing gets the stateless seed
    [seed, position of the record in the stream]."""
    def prepare(example):
        seed_kwargs = {'seed': example['seed']} if seeded else {}
        image, labels, boxes, difficult = preprocess_fn(
            example['image'], example['labels'], example['boxes'], example['difficult'],
            out_shape=out_shape, **seed_kwargs)
        image.set_shape(list(out_shape) + [3])
        features = {
            'image': image,
            'gt_boxes': boxes,
            'gt_labels': labels,
            'gt_difficult': difficult,
            'num_boxes': tf.shape(labels)[0],
            'original_shape': example['shape'],
            'image_ok': tf.equal(example['status'], bad_samples.OK),
            'skipped_before': example['skipped_before'],
            'bad_record': example['bad_record'],
        }
        if encode_fn is not None:
            features.update(encode_fn(labels, boxes, difficult))
        return features
    return prepare


def _records(filenames, config, ordered):
    """{'shard', 'index' (in the shard), 'serialized'} of every record, shards read in parallel."""
    files = tf.data.Dataset.from_tensor_slices(filenames)
    if config.is_training:
        files = files.shuffle(len(filenames), seed=config.seed, reshuffle_each_iteration=True)

    def read(path):
        return tf.data.TFRecordDataset(path).enumerate().map(
            lambda index, serialized: {'shard': path, 'index': index, 'serialized': serialized})
    readers = min(config.num_readers, len(filenames))
    return files.interleave(read, cycle_length=readers, block_length=1, num_parallel_calls=readers,
                            deterministic=ordered)


def make_dataset(filenames, preprocess_fn, config, encode_fn=None):
    """A tf.data.Dataset of batched dicts (config: a PipelineConfig).

    'image' [B, h, w, 3] float32; 'gt_boxes' [B, Mmax, 4], 'gt_labels' [B, Mmax], 'gt_difficult' [B, Mmax]
    (zero-padded to the batch's largest box count Mmax); 'num_boxes' [B] int32; 'original_shape' [B, 3] int64;
    'image_ok' [B] bool (False only in evaluation, for a record that could not be decoded); 'skipped_before'
    [B] int64 (training: records that could not be decoded, dropped just before this sample) and 'bad_record'
    [B] string (their last, or in evaluation this record, as '<shard> record <index>: <reason>'; else '');
    plus encode_fn's outputs, whatever keys it returns (e.g. 'target_labels' [B, N], 'target_loc' [B, N, 4]).

    preprocess_fn(image, labels, boxes, difficult, out_shape[, seed]): see preprocessing_factory; when a seed
    is given and is_training, each record gets the stateless seed [seed, record position]. encode_fn(labels,
    boxes, difficult) -> dict of fixed-shape tensors, or None.
    """
    filenames = list(filenames)
    if not filenames:
        raise UserError('tfrecord_pipeline: no TFRecord files to read')
    seed = 0 if config.deterministic and config.seed is None else config.seed
    config = dataclasses.replace(config, seed=seed)
    ordered = config.deterministic or not config.is_training
    seeded = config.is_training and seed is not None

    def decoded(records):
        return records.interleave(_decoded_or_flagged, cycle_length=config.num_parallel_calls,
                                  num_parallel_calls=config.num_parallel_calls, deterministic=ordered)

    def shuffled(elements):
        stream = elements.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        return stream.enumerate().map(lambda position, element: dict(
            element, seed=tf.stack([tf.constant(seed, tf.int64), position]))) if seeded else stream

    records = _records(filenames, config, ordered)
    if not config.is_training:
        examples = decoded(records).map(bad_samples.flag_bad)
    else:
        # Cached, the shuffle buffer holds decoded images, but the same ones as the cache (tensors are shared).
        examples = shuffled(decoded(records).cache()) if config.cache_decoded else decoded(shuffled(records))
        examples = bad_samples.drop_bad(examples)
    dataset = examples.map(_prepare_fn(preprocess_fn, tuple(config.out_shape), encode_fn, seeded),
                           num_parallel_calls=config.num_parallel_calls, deterministic=ordered)
    dataset = dataset.padded_batch(config.batch_size, drop_remainder=config.is_training)
    return dataset.prefetch(tf.data.experimental.AUTOTUNE)
