"""tf.data input pipeline: TFRecord shards -> parsed, decoded, augmented, anchor-encoded, padded batches.

Records use the SSD-Tensorflow feature keys (datasets/tfrecord_schema.py); boxes come out normalised
yxyx float32. Order of stages: list shards -> parallel interleaved reads -> shuffle -> parse + decode +
preprocess + encode (one parallel map) -> padded batch -> prefetch.
"""
import tensorflow.compat.v1 as tf

from datasets import tfrecord_schema as keys
from utils.errors import UserError

_FEATURES = {
    keys.ENCODED: tf.io.FixedLenFeature((), tf.string),
    keys.LABEL: tf.io.VarLenFeature(tf.int64),
    keys.DIFFICULT: tf.io.VarLenFeature(tf.int64),
    keys.TRUNCATED: tf.io.VarLenFeature(tf.int64),
    **{key: tf.io.VarLenFeature(tf.float32) for key in keys.BOX_KEYS.values()},
}


def _flags_or_zeros(values, num_boxes):
    """An optional per-box int64 flag: the record's values, or zeros [num_boxes] when the key is absent."""
    return tf.cond(tf.equal(tf.size(values), 0),
                   lambda: tf.zeros([num_boxes], tf.int64), lambda: values)


def parse_example(serialized):
    """One serialized tf.train.Example -> dict of tensors.

    image uint8 [H, W, 3] (JPEG or PNG, decoded to RGB), shape int64 [3] (the decoded image's H, W, 3),
    labels int64 [M], boxes float32 [M, 4] normalised yxyx, difficult int64 [M], truncated int64 [M]
    (difficult/truncated default to 0 when the record lacks them, as some older records do).
    """
    features = tf.io.parse_single_example(serialized, _FEATURES)
    dense = {key: tf.sparse.to_dense(value) for key, value in features.items()
             if isinstance(value, tf.SparseTensor)}
    image = tf.io.decode_image(features[keys.ENCODED], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    labels = dense[keys.LABEL]
    num_boxes = tf.shape(labels)[0]
    boxes = tf.stack([dense[key] for key in keys.BOX_KEYS.values()], axis=1)
    return {
        'image': image,
        'shape': tf.shape(image, out_type=tf.int64),
        'labels': labels,
        'boxes': boxes,
        'difficult': _flags_or_zeros(dense[keys.DIFFICULT], num_boxes),
        'truncated': _flags_or_zeros(dense[keys.TRUNCATED], num_boxes),
    }


def _prepare_fn(preprocess_fn, out_shape, encode_fn, seed):
    """The per-record map function: parse, decode, preprocess, encode.

    seed None: fn(record). Else fn(index, record), preprocessing seeded with the stateless seed [seed, index].
    """
    def prepare(record, seed_kwargs):
        example = parse_example(record)
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
        }
        if encode_fn is not None:
            features.update(encode_fn(labels, boxes, difficult))
        return features

    if seed is None:
        return lambda record: prepare(record, {})
    return lambda index, record: prepare(record, {'seed': tf.stack([tf.constant(seed, tf.int64), index])})


def make_dataset(filenames, batch_size, preprocess_fn, out_shape=(300, 300), encode_fn=None, is_training=True,
                 num_readers=4, num_parallel_calls=4, shuffle_buffer=2048, seed=None, deterministic=False,
                 repeat=True, drop_remainder=True):
    """A tf.data.Dataset of batched dicts.

    'image' [B, h, w, 3] float32; 'gt_boxes' [B, Mmax, 4], 'gt_labels' [B, Mmax], 'gt_difficult' [B, Mmax]
    (zero-padded to the batch's largest box count Mmax); 'num_boxes' [B] int32; 'original_shape' [B, 3] int64;
    plus encode_fn's outputs, whatever keys it returns (e.g. 'target_labels' [B, N], 'target_loc' [B, N, 4]).

    preprocess_fn(image, labels, boxes, difficult, out_shape[, seed]): see preprocessing_factory; when a seed
    is given and is_training, each record gets the stateless seed [seed, record index]. encode_fn(labels,
    boxes, difficult) -> dict of fixed-shape tensors, or None. Training shuffles shards and records;
    deterministic=True keeps every stage ordered and seeds everything (seed defaults to 0), so two datasets
    built alike yield identical batches. Evaluation (is_training=False) reads in order without shuffling.
    """
    filenames = list(filenames)
    if not filenames:
        raise UserError('tfrecord_pipeline: no TFRecord files to read')
    if deterministic and seed is None:
        seed = 0
    ordered = deterministic or not is_training
    files = tf.data.Dataset.from_tensor_slices(filenames)
    if is_training:
        files = files.shuffle(len(filenames), seed=seed, reshuffle_each_iteration=True)
    readers = min(num_readers, len(filenames))
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=readers, block_length=1,
                               num_parallel_calls=readers, deterministic=ordered)
    if is_training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    element_seed = seed if is_training else None
    if element_seed is not None:
        records = records.enumerate()
    dataset = records.map(_prepare_fn(preprocess_fn, tuple(out_shape), encode_fn, element_seed),
                          num_parallel_calls=num_parallel_calls, deterministic=ordered)
    dataset = dataset.padded_batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.experimental.AUTOTUNE)
