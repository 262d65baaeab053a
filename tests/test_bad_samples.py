"""Samples that cannot be decoded are skipped and counted, not fatal; a damaged shard still fails."""
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from datasets import bad_samples, tfrecord_pipeline
from preprocessing import ssd_vgg_preprocessing
from tests.test_tfrecord_pipeline import make_example, sample
from utils.errors import UserError

NUM_GOOD = 9
BAD_IMAGE_LABEL = 901


def with_encoded(serialized, encoded):
    example = tf.train.Example.FromString(serialized)
    example.features.feature['image/encoded'].bytes_list.value[0] = encoded
    return example.SerializeToString()


def unequal_boxes(serialized):
    example = tf.train.Example.FromString(serialized)
    del example.features.feature['image/object/bbox/xmin'].float_list.value[-1]
    return example.SerializeToString()


@pytest.fixture(scope='module')
def split(tmp_path_factory):
    """Two shards: 9 good records (labels 10k + 1 ...), an undecodable image (label 901), a malformed
    Example and one with box fields of unequal length. Returns (paths, labels of the good records)."""
    directory = tmp_path_factory.mktemp('bad')
    rng = np.random.RandomState(0)
    records, good_labels = [], set()
    for index in range(NUM_GOOD):
        pixels, boxes, labels, difficult = sample(rng, index)
        records.append(make_example(pixels, boxes, labels, difficult))
        good_labels.update(int(label) for label in labels)
    pixels, boxes, _, _ = sample(rng, 1)
    records.insert(3, with_encoded(make_example(pixels, boxes, [BAD_IMAGE_LABEL]), b'\x89PNG\r\n\x1a\n cut short'))
    records.insert(6, b'\x0a\x05garbage, not an Example')
    pixels, boxes, labels, _ = sample(rng, 2)
    records.insert(9, unequal_boxes(make_example(pixels, boxes, [777, 778])))
    paths = [str(directory / f'toy_test_{shard:03d}.tfrecord') for shard in range(2)]
    for shard, path in enumerate(paths):
        with tf.io.TFRecordWriter(path) as writer:
            for record in records[shard * 6:(shard + 1) * 6]:
                writer.write(record)
    return paths, good_labels


def read_all(paths, config, max_batches=None):
    """(batches, counter values) after reading the dataset (to its end, or max_batches batches)."""
    with tf.Graph().as_default():
        counters = bad_samples.SampleCounters()
        dataset = tfrecord_pipeline.make_dataset(paths, ssd_vgg_preprocessing.preprocess_for_eval
                                                 if not config.is_training else
                                                 ssd_vgg_preprocessing.preprocess_for_train, config, counters=counters)
        iterator = tf.data.make_initializable_iterator(dataset)
        batch = iterator.get_next()
        batches = []
        with tf.Session() as session:
            session.run([counters.initializer, iterator.initializer])
            try:
                while max_batches is None or len(batches) < max_batches:
                    batches.append(session.run(batch))
            except tf.errors.OutOfRangeError:
                pass
            return batches, session.run(counters.values)


def test_eval_counts_every_bad_record_and_keeps_the_annotations_of_an_undecodable_image(split):
    paths, good_labels = split
    batches, counts = read_all(paths, tfrecord_pipeline.PipelineConfig(4, out_shape=(32, 32), is_training=False,
                                                                      num_readers=1))
    assert counts['read'] == NUM_GOOD + 3 and counts['bad'] == 3
    assert counts['last_bad'].decode() == f'{paths[1]} record 3: malformed record (Example or box fields)'
    ok = np.concatenate([b['image_ok'] for b in batches])
    assert len(ok) == NUM_GOOD + 1 and ok.sum() == NUM_GOOD           # the malformed ones are left out
    kept_bad = [(b['gt_labels'][i, :b['num_boxes'][i]]) for b in batches for i in range(len(b['image_ok']))
                if not b['image_ok'][i]]
    assert [list(labels) for labels in kept_bad] == [[BAD_IMAGE_LABEL]]  # counts as missed ground truth
    seen = {int(label) for b in batches for i in range(len(b['image_ok'])) if b['image_ok'][i]
            for label in b['gt_labels'][i, :b['num_boxes'][i]]}
    assert seen == good_labels


def test_training_skips_bad_records_every_epoch(split):
    paths, good_labels = split
    config = tfrecord_pipeline.PipelineConfig(3, out_shape=(32, 32), num_readers=2, num_parallel_calls=2,
                                              shuffle_buffer=4, seed=1)
    batches, counts = read_all(paths, config, max_batches=9)             # 27 samples: 3 epochs of the 9
    assert all(b['image_ok'].all() for b in batches)
    seen = {int(label) for b in batches for i in range(3) for label in b['gt_labels'][i, :b['num_boxes'][i]]}
    assert seen <= good_labels
    epochs = -(-counts['read'] // (NUM_GOOD + 3))
    assert counts['read'] >= 27 and 3 * (epochs - 1) <= counts['bad'] <= 3 * epochs
    assert counts['bad'] * (NUM_GOOD + 3) == pytest.approx(3 * counts['read'], abs=3 * (NUM_GOOD + 3))


def test_a_damaged_shard_still_fails_the_reader(split, tmp_path):
    paths, _ = split
    with open(paths[0], 'rb') as source:
        data = source.read()
    truncated = tmp_path / 'toy_test_000.tfrecord'
    truncated.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(tf.errors.DataLossError):
        read_all([str(truncated)], tfrecord_pipeline.PipelineConfig(2, out_shape=(32, 32), is_training=False))


def test_monitor_warns_once_then_stops_over_the_fraction():
    monitor = bad_samples.BadSampleMonitor(max_fraction=0.01, split_size=1000)
    assert monitor.update(50, 0, b'') is None
    warning = monitor.update(60, 1, b'a_train_000.tfrecord record 7: the image does not decode')
    assert 'a_train_000.tfrecord record 7' in warning
    assert monitor.update(900, 10, b'x') is None                        # 10 of at least the split's 1000
    assert monitor.summary() == '10 bad sample(s) skipped of 900 read'
    assert monitor.update(2000, 20, b'x') is None
    with pytest.raises(UserError, match=r'^21 of the 2000 samples read could not be decoded, more than 0.01 '
                                        r'of them \(the last: b_train_003.tfrecord record 2: malformed'):
        monitor.update(2000, 21, b'b_train_003.tfrecord record 2: malformed record (Example or box fields)')


def test_a_reader_failure_is_recognised_and_summarised_in_one_line(split, tmp_path):
    paths, _ = split
    with open(paths[0], 'rb') as source:
        data = source.read()
    truncated = tmp_path / 'toy_train_000.tfrecord'
    truncated.write_bytes(data[:len(data) // 2])
    with tf.Graph().as_default():
        with tf.name_scope('inputs'):
            batch = tf.data.make_one_shot_iterator(tfrecord_pipeline.make_dataset(
                [str(truncated)], ssd_vgg_preprocessing.preprocess_for_train,
                tfrecord_pipeline.PipelineConfig(2, out_shape=(32, 32)))).get_next()
        model_error = tf.debugging.assert_positive(tf.placeholder_with_default(-1.0, []), message='not input')
        with tf.Session() as session:
            with pytest.raises(tf.errors.OpError) as failure:
                for _ in range(10):
                    session.run([tf.reduce_sum(batch['image'])])
            with pytest.raises(tf.errors.InvalidArgumentError) as other:
                session.run(model_error)
    assert bad_samples.is_input_failure(failure.value) and not bad_samples.is_input_failure(other.value)
    assert re.fullmatch(r"truncated record at \d+' failed with Read less bytes than requested",
                        bad_samples.error_line(failure.value))
