"""Small checkpoints, images and TFRecords for the eval / detect / export tests (built in tmp dirs).

The checkpoint is a depth-0.125 SSD300 with random weights; its classifier biases favour class 1, so
detections exist above any score threshold (what they look like does not matter to these tests).
"""
import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets import dataset_info
from nets import nets_factory
from preprocessing.ssd_vgg_preprocessing import preprocess_for_eval
from utils import checkpoints, inference_model
from utils.model_config import ModelConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = ['none', 'bottle', 'can', 'box']
DEPTH_MULTIPLIER = 0.125
GLOBAL_STEP = 7
CLASS_ONE_BIAS = 4.0


def make_checkpoint(train_dir, num_classes=len(CLASS_NAMES), seed=0, class_names=None, labels_offset=0):
    """Saves model_config.json (first, as training does), then random weights as train_dir/model.ckpt-7;
    returns the prefix. class_names default: CLASS_NAMES for 4 classes, else 'c<i>'."""
    if class_names is None:
        class_names = CLASS_NAMES if num_classes == len(CLASS_NAMES) else \
            ['none'] + ['c%d' % i for i in range(1, num_classes)]
    ModelConfig('ssd_300_vgg', num_classes, tuple(class_names), DEPTH_MULTIPLIER, 'ssd_tensorflow', (300, 300), 'NHWC',
                labels_offset).save(train_dir)
    network = nets_factory.get_network('ssd_300_vgg', num_classes, DEPTH_MULTIPLIER)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        global_step = tf.train.get_or_create_global_step()
        with slim.arg_scope(network.arg_scope()):
            network.build(tf.zeros([1, 300, 300, 3]), is_training=False)
        favour_class_one = [tf.assign(bias, tf.where(tf.equal(tf.range(tf.size(bias)) % num_classes, 1),
                                                     tf.fill(tf.shape(bias), CLASS_ONE_BIAS), bias))
                            for bias in tf.global_variables() if bias.op.name.endswith('conv_cls/biases')]
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            session.run([favour_class_one, tf.assign(global_step, GLOBAL_STEP)])
            return tf.train.Saver().save(session, os.path.join(train_dir, 'model.ckpt'), global_step=GLOBAL_STEP)


def make_image(height, width, seed):
    """A uint8 [height, width, 3] picture: a smooth gradient plus noise (content is irrelevant)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 255, height)[:, None, None]
    cols = np.linspace(255, 0, width)[None, :, None]
    image = 0.5 * rows + 0.5 * cols + rng.normal(0, 20, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image, image_format):
    """uint8 array -> JPEG / PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format)
    return buffer.getvalue()


# (height, width, format, boxes yxyx normalised, labels, difficult)
EVAL_IMAGES = (
    (120, 160, 'PNG', [[0.1, 0.1, 0.6, 0.5], [0.5, 0.5, 0.9, 0.9]], [1, 2], [0, 0]),
    (200, 100, 'JPEG', [[0.2, 0.2, 0.8, 0.8]], [3], [1]),
    (90, 90, 'PNG', [[0.0, 0.0, 0.5, 0.5], [0.4, 0.3, 1.0, 1.0], [0.1, 0.6, 0.3, 0.9]], [1, 1, 2], [0, 0, 0]),
)


def _example(encoded, image_format, height, width, boxes, labels, difficult):
    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))

    def raw(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))
    boxes = np.asarray(boxes, np.float32)
    feature = {
        'image/height': ints([height]), 'image/width': ints([width]), 'image/channels': ints([3]),
        'image/shape': ints([height, width, 3]), 'image/format': raw([image_format.lower().encode()]),
        'image/encoded': raw([encoded]),
        'image/object/bbox/ymin': floats(boxes[:, 0]), 'image/object/bbox/xmin': floats(boxes[:, 1]),
        'image/object/bbox/ymax': floats(boxes[:, 2]), 'image/object/bbox/xmax': floats(boxes[:, 3]),
        'image/object/bbox/label': ints(labels),
        'image/object/bbox/label_text': raw([CLASS_NAMES[label].encode() for label in labels]),
        'image/object/bbox/difficult': ints(difficult), 'image/object/bbox/truncated': ints([0] * len(labels)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def make_tfrecords(dataset_dir, name='tiny', split='test'):
    """Writes EVAL_IMAGES as one shard '<name>_<split>_000.tfrecord' plus dataset_info.json."""
    os.makedirs(dataset_dir, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(dataset_dir, '%s_%s_000.tfrecord' % (name, split))) as writer:
        for index, (height, width, image_format, boxes, labels, difficult) in enumerate(EVAL_IMAGES):
            encoded = encode(make_image(height, width, index), image_format)
            writer.write(_example(encoded, image_format, height, width, boxes, labels, difficult))
    dataset_info.write_dataset_info(dataset_dir, dataset_info.DatasetInfo(
        name=name, class_names=CLASS_NAMES, num_samples={split: len(EVAL_IMAGES)}))


# What TensorFlow and TF-Slim print that a user cannot act on; no script's output may hold it by default.
TENSORFLOW_NOISE = ('All log messages before absl::InitializeLog', 'oneDNN custom operations are on',
                    'cpu_feature_guard', 'Scale of 0 disables regularizer', 'Instructions for updating')


def assert_no_tensorflow_noise(output):
    found = [line for line in output.splitlines() if any(noise in line for noise in TENSORFLOW_NOISE)]
    assert not found, found


def _script_command(args, env_extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO_ROOT, **(env_extra or {}))
    return [sys.executable] + list(args), {'cwd': REPO_ROOT, 'env': env, 'text': True}


def run_script(args, timeout=120, env_extra=None):
    """Runs a repository script in a fresh Python process; returns the CompletedProcess (text)."""
    command, options = _script_command(args, env_extra)
    return subprocess.run(command, capture_output=True, timeout=timeout, **options)


def start_script(args, env_extra=None):
    """Starts a repository script in a fresh Python process; returns the Popen (text stdout / stderr pipes)."""
    command, options = _script_command(args, env_extra)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


def reference_detections(prefix, encoded_images, config, detect_options):
    """Detections of the checkpoint at `prefix`, one image at a time, straight from the library pieces
    (tf.io.decode_image -> preprocess_for_eval -> network -> net.detect): a list of dicts of numpy arrays
    holding only the valid rows (boxes normalised yxyx, scores, classes)."""
    results = []
    with tf.Graph().as_default():
        encoded = tf.placeholder(tf.string, [])
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        empty = tf.zeros([0], tf.int64)
        network_input = preprocess_for_eval(image, empty, tf.zeros([0, 4]), empty, out_shape=(300, 300))[0]
        network, detections = inference_model.build_detections(network_input[None], config, detect_options)
        with tf.Session() as session:
            tf.train.Saver(var_list=checkpoints.network_variables(network)).restore(session, prefix)
            for data in encoded_images:
                values = session.run(detections, {encoded: data})
                count = int(values['num_detections'][0])
                results.append({'boxes': values['detection_boxes'][0, :count],
                                'scores': values['detection_scores'][0, :count],
                                'classes': values['detection_classes'][0, :count]})
    return results


def assert_same_detections(expected, boxes, scores, classes, atol=1e-4):
    """Each expected detection has its own counterpart of the same class with box and score within atol
    (order-free: near-equal scores may swap places between two graphs)."""
    boxes, scores, classes = np.asarray(boxes), np.asarray(scores), np.asarray(classes)
    assert len(scores) == len(expected['scores']), (len(scores), len(expected['scores']))
    rows_expected = np.concatenate([expected['boxes'], expected['scores'][:, None]], axis=1)
    rows = np.concatenate([boxes, scores[:, None]], axis=1)
    distance = np.abs(rows_expected[:, None, :] - rows[None, :, :]).max(axis=-1)
    distance[expected['classes'][:, None] != classes[None, :]] = np.inf
    unused = np.ones(len(rows), bool)
    for index in np.argsort(distance.min(axis=1)):
        candidates = np.flatnonzero(unused & (distance[index] <= atol))
        assert candidates.size, 'detection %d (%s) has no counterpart within %g' % (
            index, rows_expected[index], atol)
        unused[candidates[np.argmin(distance[index, candidates])]] = False
