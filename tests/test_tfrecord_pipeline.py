"""tf.data pipeline: parsing (JPEG/PNG, optional keys), deterministic batches, padding, encode_fn."""
import io
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import tfrecord_pipeline
from preprocessing import ssd_vgg_preprocessing
from utils.errors import UserError

NUM_ANCHORS = 5


def encoded_image(pixels, image_format):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, quality=95)
    return buffer.getvalue()


def make_example(pixels, boxes, labels, difficult=None, truncated=None, image_format='PNG'):
    """A serialized tf.train.Example with the SSD-Tensorflow keys; difficult/truncated omitted when None."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    int64 = lambda values: tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))  # noqa: E731
    floats = lambda values: tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))  # noqa: E731
    strings = lambda values: tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))  # noqa: E731
    height, width = pixels.shape[:2]
    feature = {
        'image/encoded': strings([encoded_image(pixels, image_format)]),
        'image/format': strings([image_format.lower().encode()]),
        'image/height': int64([height]), 'image/width': int64([width]), 'image/channels': int64([3]),
        'image/shape': int64([height, width, 3]),
        'image/object/bbox/ymin': floats(boxes[:, 0]), 'image/object/bbox/xmin': floats(boxes[:, 1]),
        'image/object/bbox/ymax': floats(boxes[:, 2]), 'image/object/bbox/xmax': floats(boxes[:, 3]),
        'image/object/bbox/label': int64(labels),
        'image/object/bbox/label_text': strings([b'thing'] * len(labels)),
    }
    if difficult is not None:
        feature['image/object/bbox/difficult'] = int64(difficult)
    if truncated is not None:
        feature['image/object/bbox/truncated'] = int64(truncated)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def sample(rng, index):
    """(pixels, boxes, labels, difficult) for record `index`: 0..3 boxes, label = index * 10 + box."""
    height, width = rng.randint(20, 48, 2)
    pixels = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
    num = index % 4
    corner = rng.uniform(0, 0.5, (num, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.1, 0.5, (num, 2))], axis=1).astype(np.float32)
    return pixels, boxes, np.arange(num) + index * 10 + 1, np.arange(num) % 2


@pytest.fixture(scope='module')
def shards(tmp_path_factory):
    """Two shards of 6 PNG records each; returns (paths, samples in file order)."""
    directory = tmp_path_factory.mktemp('records')
    rng = np.random.RandomState(0)
    paths, samples = [], []
    for shard in range(2):
        path = str(directory / ('toy_train_%03d.tfrecord' % shard))
        with tf.io.TFRecordWriter(path) as writer:
            for index in range(shard * 6, shard * 6 + 6):
                pixels, boxes, labels, difficult = sample(rng, index)
                writer.write(make_example(pixels, boxes, labels, difficult, truncated=1 - difficult))
                samples.append((pixels, boxes, labels, difficult))
        paths.append(path)
    return paths, samples


def parse(serialized):
    with tf.Graph().as_default(), tf.Session() as session:
        return session.run(tfrecord_pipeline.parse_example(tf.constant(serialized)))


def test_parse_png_exact_values():
    pixels, boxes, labels, difficult = sample(np.random.RandomState(1), 3)
    out = parse(make_example(pixels, boxes, labels, difficult, truncated=[1, 0, 1]))
    np.testing.assert_array_equal(out['image'], pixels)
    np.testing.assert_array_equal(out['shape'], pixels.shape)
    np.testing.assert_array_equal(out['boxes'], boxes)
    np.testing.assert_array_equal(out['labels'], labels)
    np.testing.assert_array_equal(out['difficult'], difficult)
    np.testing.assert_array_equal(out['truncated'], [1, 0, 1])
    assert out['labels'].dtype == np.int64 and out['boxes'].dtype == np.float32


def test_parse_jpeg_grayscale_and_missing_optional_keys():
    flat = np.full((30, 40), 200, np.uint8)
    gradient = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    pixels = np.stack([flat, gradient, flat], -1)
    out = parse(make_example(pixels, [[0.1, 0.2, 0.6, 0.9]], [4], image_format='JPEG'))
    assert out['image'].shape == (30, 40, 3) and out['image'].dtype == np.uint8
    pil_decoded = np.asarray(Image.open(io.BytesIO(encoded_image(pixels, 'JPEG'))).convert('RGB'))
    assert np.abs(out['image'].astype(int) - pil_decoded).mean() < 1           # same image as PIL sees
    np.testing.assert_array_equal(out['difficult'], [0])
    np.testing.assert_array_equal(out['truncated'], [0])
    grey = parse(make_example(np.stack([flat] * 3, -1)[..., 0], [], []))       # grayscale PNG, no boxes
    assert grey['image'].shape == (30, 40, 3) and (grey['image'] == 200).all()
    assert grey['boxes'].shape == (0, 4) and grey['labels'].shape == (0,) and grey['difficult'].shape == (0,)


def fake_encode_fn(labels, boxes, difficult):
    """Fixed-size outputs derived from the gt_* fields (which the test recomputes); 'num_difficult' is
    a key no encoder has, to show every output is passed through whatever its name."""
    return {
        'target_labels': tf.fill([NUM_ANCHORS], tf.reduce_sum(labels)),
        'target_loc': tf.tile(tf.reduce_sum(boxes, axis=0, keepdims=True), [NUM_ANCHORS, 1]),
        'num_difficult': tf.fill([NUM_ANCHORS], tf.reduce_sum(difficult)),
    }


def read_batches(dataset, count):
    batch = tf.data.make_one_shot_iterator(dataset).get_next()
    with tf.Session() as session:
        return [session.run(batch) for _ in range(count)]


def test_eval_batches_in_order_padded_and_encoded(shards):
    paths, samples = shards
    with tf.Graph().as_default():
        dataset = tfrecord_pipeline.make_dataset(
            paths, ssd_vgg_preprocessing.preprocess_for_eval, tfrecord_pipeline.PipelineConfig(
                4, out_shape=(32, 24), is_training=False, num_readers=1), encode_fn=fake_encode_fn)
        batches = read_batches(dataset, 3)
    for number, batch in enumerate(batches):
        assert batch['image'].shape == (4, 32, 24, 3) and batch['image'].dtype == np.float32
        max_boxes = max(len(samples[number * 4 + i][1]) for i in range(4))
        assert batch['gt_boxes'].shape == (4, max_boxes, 4)
        assert batch['num_boxes'].dtype == np.int32
        for i in range(4):
            pixels, boxes, labels, difficult = samples[number * 4 + i]
            num = len(labels)
            assert batch['num_boxes'][i] == num
            np.testing.assert_array_equal(batch['original_shape'][i], pixels.shape)
            np.testing.assert_array_equal(batch['gt_boxes'][i, :num], boxes)
            np.testing.assert_array_equal(batch['gt_labels'][i, :num], labels)
            np.testing.assert_array_equal(batch['gt_difficult'][i, :num], difficult)
            assert not batch['gt_boxes'][i, num:].any() and not batch['gt_labels'][i, num:].any()
            np.testing.assert_array_equal(batch['target_labels'][i], [labels.sum()] * NUM_ANCHORS)
            np.testing.assert_allclose(batch['target_loc'][i], np.tile(boxes.sum(0), (NUM_ANCHORS, 1)),
                                       atol=1e-6)
            np.testing.assert_array_equal(batch['num_difficult'][i], [difficult.sum()] * NUM_ANCHORS)


def training_batches(paths, seed):
    with tf.Graph().as_default():
        dataset = tfrecord_pipeline.make_dataset(
            paths, ssd_vgg_preprocessing.preprocess_for_train, tfrecord_pipeline.PipelineConfig(
                5, out_shape=(40, 40), num_readers=2, num_parallel_calls=3, shuffle_buffer=8, seed=seed,
                deterministic=True), encode_fn=fake_encode_fn)
        return read_batches(dataset, 4)     # 20 records: past the end of the 12, so repeat is exercised


def test_deterministic_training_batches_repeat_exactly(shards):
    paths, samples = shards
    first, second, other = training_batches(paths, 3), training_batches(paths, 3), training_batches(paths, 4)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a['image'], b['image']) for a, b in zip(first, other))
    known = {int(labels[0]) // 10 for _, _, labels, _ in samples if len(labels)}
    for batch in first:
        assert batch['image'].shape == (5, 40, 40, 3)
        for i in range(5):
            num = batch['num_boxes'][i]
            labels = batch['gt_labels'][i, :num]
            assert len({int(label) // 10 for label in labels}) <= 1             # boxes of one record
            assert not labels.size or int(labels[0]) // 10 in known
            np.testing.assert_array_equal(batch['gt_difficult'][i, :num], (labels - 1) % 10 % 2)
            boxes = batch['gt_boxes'][i, :num]
            assert (boxes >= 0).all() and (boxes <= 1).all() and (boxes[:, 2:] > boxes[:, :2]).all()
            np.testing.assert_array_equal(batch['target_labels'][i], [labels.sum()] * NUM_ANCHORS)


def _records_seen(batches):
    """What training batches over the `shards` fixture's records hold: the records with boxes (by their labels'
    tens, sorted) and the count of those without."""
    with_boxes, without = [], 0
    for batch in batches:
        for i in range(len(batch['num_boxes'])):
            num = batch['num_boxes'][i]
            if num:
                with_boxes.append(int(batch['gt_labels'][i, 0]) // 10)
            else:
                without += 1
    return sorted(with_boxes), without


@pytest.mark.parametrize('cache_decoded', [True, False])
def test_cached_training_reads_and_decodes_each_record_once(shards, tmp_path, cache_decoded):
    paths, samples = shards
    copies = [shutil.copy(path, tmp_path) for path in paths]
    with tf.Graph().as_default():
        dataset = tfrecord_pipeline.make_dataset(
            copies, ssd_vgg_preprocessing.preprocess_for_train, tfrecord_pipeline.PipelineConfig(
                4, out_shape=(16, 16), num_readers=2, num_parallel_calls=2, shuffle_buffer=12, seed=1,
                deterministic=True, cache_decoded=cache_decoded))
        batch = tf.data.make_one_shot_iterator(dataset).get_next()
        with tf.Session() as session:
            first_epoch = [session.run(batch) for _ in range(3)]
            for copy in copies:    # the records are gone: only a cache can give the next epochs
                os.remove(copy)
            later = []
            try:
                later = [session.run(batch) for _ in range(6)]
            except tf.errors.NotFoundError:
                pass
    every_record = (sorted(index for index, sample in enumerate(samples) if len(sample[2])),
                    sum(1 for sample in samples if not len(sample[2])))
    assert _records_seen(first_epoch) == every_record      # each record once per epoch, cached or not
    if cache_decoded:
        assert _records_seen(later[:3]) == _records_seen(later[3:]) == every_record
    else:
        assert not later                                   # read again each epoch: the deletion fails the reader


def test_non_deterministic_training_runs(shards):
    with tf.Graph().as_default():
        dataset = tfrecord_pipeline.make_dataset(shards[0], ssd_vgg_preprocessing.preprocess_for_train,
                                                 tfrecord_pipeline.PipelineConfig(4, shuffle_buffer=4))
        batch, = read_batches(dataset, 1)
    assert batch['image'].shape == (4, 300, 300, 3)


def test_no_files_is_a_user_error():
    with pytest.raises(UserError, match='no TFRecord files'):
        tfrecord_pipeline.make_dataset([], ssd_vgg_preprocessing.preprocess_for_eval,
                                       tfrecord_pipeline.PipelineConfig(2))
