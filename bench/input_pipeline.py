"""Throughput of the full training input pipeline (read + decode + augment [+ anchor encoding] + batch).

    python bench/input_pipeline.py --dataset_dir=IMAGE/tfrecords --split=train --num_images=300

Prints images/s (wall clock) and per core, two ways: wall rate / cores used (min(num_parallel_calls,
CPUs)), and images per CPU-second of the whole process (user + system time, all threads).
"""
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from datasets import dataset_info, tfrecord_pipeline  # noqa: E402
from preprocessing import preprocessing_factory  # noqa: E402
from utils.errors import UserError  # noqa: E402

flags.DEFINE_string('dataset_dir', None, 'Directory of TFRecord shards (<name>_<split>_NNN.tfrecord).')
flags.DEFINE_string('split', 'train', 'Split whose shards are read.')
flags.DEFINE_integer('num_images', 300, 'Images timed per configuration (after one warm-up batch).')
flags.DEFINE_integer('num_parallel_calls', os.cpu_count(), 'Parallel preprocessing calls.')
flags.DEFINE_integer('num_readers', 4, 'Parallel TFRecord readers.')
flags.DEFINE_integer('batch_size', 32, 'Batch size.')
flags.DEFINE_string('model_name', 'ssd_300_vgg', 'Network whose preprocessing and target encoder are used.')
FLAGS = flags.FLAGS


def _cpu_seconds():
    """User + system CPU seconds used so far by this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _target_encoder(model_name, num_classes):
    """The network's anchor encoder, or None (with a note) while nets/nets_factory.py does not exist yet."""
    try:
        from nets import nets_factory
    except ImportError as error:
        print('no anchor encoding: cannot import nets.nets_factory (%s)' % error)
        return None
    return nets_factory.get_network(model_name, num_classes).target_encoder(0.5, True)


def measure(filenames, encode_fn, num_images, batch_size, num_parallel_calls, num_readers, out_shape):
    """-> (images/s wall clock, images per CPU-second) over num_images images after one warm-up batch."""
    with tf.Graph().as_default():
        dataset = tfrecord_pipeline.make_dataset(
            filenames, preprocessing_factory.get_preprocessing(FLAGS.model_name, True),
            tfrecord_pipeline.PipelineConfig(batch_size, out_shape=out_shape, num_readers=num_readers,
                                             num_parallel_calls=num_parallel_calls), encode_fn=encode_fn)
        batch = tf.data.make_one_shot_iterator(dataset).get_next()
        num_batches = max(1, -(-num_images // batch_size))
        with tf.Session() as session:
            session.run(batch)
            wall, cpu = time.perf_counter(), _cpu_seconds()
            for _ in range(num_batches):
                session.run(batch)
            wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    images = num_batches * batch_size
    return images / wall, images / cpu


def main(_):
    tf.disable_v2_behavior()
    try:
        filenames = dataset_info.list_shards(FLAGS.dataset_dir, FLAGS.split)
    except UserError as error:
        print(error)
        return 1
    try:
        num_classes = dataset_info.load_dataset_info(FLAGS.dataset_dir).num_classes
    except UserError:
        num_classes = 21  # the encoder's cost does not depend on it
    size = 512 if FLAGS.model_name == 'ssd_512_vgg' else 300
    cores = min(FLAGS.num_parallel_calls, os.cpu_count())
    encoders = [('decode + augment', None)]
    encode_fn = _target_encoder(FLAGS.model_name, num_classes)
    if encode_fn is not None:
        encoders.append(('decode + augment + encode', encode_fn))
    print('%d images, batch %d, %dx%d, num_parallel_calls %d, %d CPUs' % (
        FLAGS.num_images, FLAGS.batch_size, size, size, FLAGS.num_parallel_calls, os.cpu_count()))
    print('| pipeline | images/s | images/s per core (wall / %d cores) | images per CPU-second |' % cores)
    print('|---|---|---|---|')
    for name, encoder in encoders:
        rate, per_cpu_second = measure(filenames, encoder, FLAGS.num_images, FLAGS.batch_size,
                                       FLAGS.num_parallel_calls, FLAGS.num_readers, (size, size))
        print('| %s | %.1f | %.1f | %.1f |' % (name, rate, rate / cores, per_cpu_second))
    return 0


if __name__ == '__main__':
    flags.mark_flag_as_required('dataset_dir')
    app.run(lambda argv: sys.exit(main(argv)))
