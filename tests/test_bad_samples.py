"""Samples that cannot be decoded are skipped and counted, not fatal; a damaged shard still fails."""
import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from datasets import bad_samples, tfrecord_pipeline
from preprocessing import ssd_vgg_preprocessing
from tests.test_tfrecord_pipeline import make_example, sample

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
    """The batches of the dataset (to its end, or max_batches of them)."""
    preprocess = ssd_vgg_preprocessing.preprocess_for_train if config.is_training else \
        ssd_vgg_preprocessing.preprocess_for_eval
    with tf.Graph().as_default():
        batch = tf.data.make_one_shot_iterator(tfrecord_pipeline.make_dataset(paths, preprocess, config)).get_next()
        batches = []
        with tf.Session() as session:
            try:
                while max_batches is None or len(batches) < max_batches:
                    batches.append(session.run(batch))
            except tf.errors.OutOfRangeError:
                pass
    return batches


def column(batches, key):
    return np.concatenate([b[key] for b in batches])


def test_eval_keeps_every_record_flagged_with_the_annotations_that_could_be_read(split):
    paths, good_labels = split
    batches = read_all(paths, tfrecord_pipeline.PipelineConfig(4, out_shape=(32, 32), is_training=False,
                                                               num_readers=1))
    ok, bad_records = column(batches, 'image_ok'), column(batches, 'bad_record')
    assert len(ok) == NUM_GOOD + 3 and ok.sum() == NUM_GOOD and not column(batches, 'skipped_before').any()
    assert [name.decode() for name in bad_records[~ok]] == [
        f'{paths[0]} record 3: the image does not decode',
        f'{paths[1]} record 0: malformed record (Example or box fields)',
        f'{paths[1]} record 3: malformed record (Example or box fields)']
    assert not bad_records[ok].any()
    labels = [list(b['gt_labels'][i, :b['num_boxes'][i]]) for b in batches for i in range(len(b['image_ok']))]
    assert [labels[i] for i in np.flatnonzero(~ok)] == [[BAD_IMAGE_LABEL], [], []]   # missed GT of the first
    assert {int(label) for i in np.flatnonzero(ok) for label in labels[i]} == good_labels


def test_training_drops_bad_records_and_counts_those_it_passed_over(split):
    paths, good_labels = split
    config = tfrecord_pipeline.PipelineConfig(3, out_shape=(32, 32), num_readers=2, num_parallel_calls=2,
                                              shuffle_buffer=4, deterministic=True)
    batches = read_all(paths, config, max_batches=9)             # 27 samples: 3 epochs of the 9 good ones
    assert all(b['image_ok'].all() for b in batches)
    seen = {int(label) for b in batches for i in range(3) for label in b['gt_labels'][i, :b['num_boxes'][i]]}
    assert seen <= good_labels
    monitor = bad_samples.BadSampleMonitor(max_fraction=0.5, split_size=NUM_GOOD + 3)
    for batch in batches:
        assert monitor.check({key: batch[key] for key in ('skipped_before', 'bad_record')}) is None
    assert 6 <= monitor.bad <= 9 and monitor.read == 27 + monitor.bad    # trailing bad ones of epoch 3 not yet
    described = {name.decode() for name in column(batches, 'bad_record') if name}
    assert described <= {f'{paths[0]} record 3: the image does not decode',
                         f'{paths[1]} record 0: malformed record (Example or box fields)',
                         f'{paths[1]} record 3: malformed record (Example or box fields)'} and described
    assert column(batches, 'skipped_before').sum() == monitor.bad


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
    assert monitor.update(50, 0, b'') is None and monitor.note() == ''
    warning = monitor.update(60, 1, b'a_train_000.tfrecord record 7: the image does not decode')
    assert 'a_train_000.tfrecord record 7' in warning and monitor.over_limit() is None
    assert monitor.update(900, 10, b'x') is None and monitor.over_limit() is None   # 10 of at least the split's 1000
    assert monitor.summary() == monitor.note() == '10 bad sample(s) skipped of 900 read'
    assert monitor.update(2000, 20, b'x') is None and monitor.over_limit() is None
    # A batch of 4 after 2 more bad records: 22 of 2006.
    problem = monitor.check({'skipped_before': np.array([0, 2, 0, 0]), 'bad_record': np.array(
        [b'', b'b_train_003.tfrecord record 2: malformed record (Example or box fields)', b'', b''], object)})
    assert (monitor.read, monitor.bad) == (2006, 22)
    assert problem.startswith('22 of the 2006 samples read could not be decoded, more than 0.01 of them (the last: '
                              'b_train_003.tfrecord record 2: malformed record')


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


def test_the_error_line_of_several_root_errors_is_the_first_ones():
    """Two clones reading one damaged batch: TensorFlow's summary of several errors around the real message."""
    message = ("Graph execution error:\n\n2 root error(s) found.\n"
               "  (0) DATA_LOSS: truncated record at 3343' failed with Read less bytes than requested\n"
               "\t [[{{node IteratorGetNext}}]]\n\t [[clone_1/ssd_losses/total/_123]]\n"
               "  (1) DATA_LOSS: truncated record at 3343' failed with Read less bytes than requested\n"
               "\t [[{{node IteratorGetNext}}]]\n0 successful operations.\n0 derived errors ignored.")
    assert bad_samples.error_line(tf.errors.DataLossError(None, None, message)) == (
        "truncated record at 3343' failed with Read less bytes than requested")
