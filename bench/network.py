"""SSD network speed on this machine, next to the measured float32 matrix-multiply peak.

    python -m bench.network [--model_name ssd_300_vgg] [--batch_size 8] [--depth_multiplier 1.0]

Prints forward and forward+backward (gradients of the SSD loss + weight decay w.r.t. every weight)
time per image, GFLOP per image, and the achieved fraction of the float32 matmul peak, measured in the
same run before and after the network (the better of the two: the machine's 2 cores are shared).
FLOPs are counted analytically from the timed graph's convolution shapes, 2 FLOPs per multiply-add:
forward 2*MAC per Conv2D (MAC = output elements * kh * kw * c_in); backward adds the weight gradient
(same MACs) and the input gradient (same MACs, except conv1_1, whose input needs none). Elementwise
ops (bias, ReLU, L2 norm, softmax, loss) are not counted; tf.profiler's forward graph count is shown
as a cross-check.
"""
import os

os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
import tf_slim as slim  # noqa: E402
from absl import app, flags  # noqa: E402

from bench.timing import call_seconds  # noqa: E402
from nets import column_pairs, nets_factory  # noqa: E402

flags.DEFINE_enum('model_name', 'ssd_300_vgg', list(nets_factory.MODEL_NAMES), 'Network to time.')
flags.DEFINE_integer('batch_size', 8, 'Images per step.')
flags.DEFINE_float('depth_multiplier', 1.0, 'Channel multiplier (1.0 = published SSD).')
flags.DEFINE_string('data_format', None, 'NHWC or NCHW; default: NCHW with a GPU, else NHWC.')
flags.DEFINE_integer('iterations', 3, 'Timed steps per measurement (after one warm-up step).')
flags.DEFINE_integer('matmul_size', 4096, 'n of the n x n float32 matmul that measures the peak.')
FLAGS = flags.FLAGS

def conv_macs(graph):
    """(all Conv2D multiply-adds, conv1_1's) of the graph, from the static shapes: the network's work, so a layer
    on column pairs (nets/column_pairs.py) counts the direct convolution's, not the zero taps its kernel adds."""
    total = first = 0
    for op in graph.get_operations():
        if op.type == 'Conv2D':
            kernel_h, kernel_w, channels_in, _ = op.inputs[1].shape.as_list()
            macs = int(np.prod(op.outputs[0].shape.as_list())) * kernel_h * kernel_w * channels_in
            macs = round(macs * column_pairs.USEFUL_FRACTION) if column_pairs.is_paired(op) else macs
            total += macs
            first += macs if 'conv1/conv1_1/' in op.name else 0
    return total, first


def profiler_gflop(graph):
    """tf.profiler's float-op count of the whole graph (registered 'flops' statistics), GFLOP."""
    options = tf.profiler.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    return tf.profiler.profile(graph, options=options).total_float_ops / 1e9


def best_time(sess, fetch, iterations):
    """Seconds of the fastest of `iterations` runs, after one warm-up run."""
    return min(call_seconds(lambda: sess.run(fetch), iterations))


def matmul_peak(size, iterations):
    """Measured float32 GFLOP/s of an n x n matmul (2 n^3 FLOPs)."""
    with tf.Graph().as_default():
        a = tf.Variable(tf.random.normal([size, size]))
        b = tf.Variable(tf.random.normal([size, size]))
        product = tf.reduce_sum(tf.matmul(a, b))  # a fetched value: Grappler prunes unfetched work
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            return 2. * size ** 3 / best_time(sess, product, iterations) / 1e9


def time_network(model_name, batch_size, depth_multiplier, data_format, iterations):
    """(forward s/step, fwd+bwd s/step, forward GFLOP/step, fwd+bwd GFLOP/step, profiler fwd GFLOP/step)."""
    graph = tf.Graph()
    with graph.as_default():
        net = nets_factory.get_network(model_name, 21, depth_multiplier)
        size = net.default_image_size
        rng = np.random.RandomState(0)
        images = tf.Variable(rng.normal(0, 50, [batch_size, size, size, 3]).astype(np.float32), trainable=False)
        with slim.arg_scope(net.arg_scope(data_format=data_format)):
            logits, loc, _ = net.build(images, is_training=True, data_format=data_format)
        forward = [tf.reduce_sum(logits), tf.reduce_sum(loc)]
        macs, first_macs = conv_macs(graph)
        profiled_gflop = profiler_gflop(graph)
        labels = tf.constant(rng.randint(0, 21, [batch_size, len(net.anchors)]), tf.int64)
        losses = net.losses(logits, loc, labels, tf.zeros_like(loc))
        total = losses['total'] + tf.add_n(tf.losses.get_regularization_losses())
        backward = tf.add_n([tf.reduce_sum(g) for g in tf.gradients(total, tf.trainable_variables())])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            forward_s = best_time(sess, forward, iterations)
            train_s = best_time(sess, backward, iterations)
    return forward_s, train_s, 2e-9 * macs, 2e-9 * (3 * macs - first_macs), profiled_gflop


def main(_):
    data_format = FLAGS.data_format or nets_factory.default_data_format()
    load_before = os.getloadavg()[0]
    peak_before = matmul_peak(FLAGS.matmul_size, FLAGS.iterations)
    forward_s, train_s, forward_gflop, train_gflop, profiled_gflop = time_network(
        FLAGS.model_name, FLAGS.batch_size, FLAGS.depth_multiplier, data_format, FLAGS.iterations)
    peak_after = matmul_peak(FLAGS.matmul_size, FLAGS.iterations)
    peak = max(peak_before, peak_after)
    load_after = os.getloadavg()[0]
    batch = FLAGS.batch_size
    print('%s, depth %.3g, batch %d, %s, %d CPU cores, load average %.1f before / %.1f after (best of %d)'
          % (FLAGS.model_name, FLAGS.depth_multiplier, batch, data_format, os.cpu_count(), load_before,
             load_after, FLAGS.iterations))
    print('| measure | ms / image | GFLOP / image | GFLOP/s | fraction of matmul peak |')
    print('|---|---|---|---|---|')
    for name, seconds, gflop in (('forward', forward_s, forward_gflop),
                                 ('forward + backward', train_s, train_gflop)):
        rate = gflop / seconds
        print('| %s | %.1f | %.2f | %.1f | %.2f |' % (name, 1e3 * seconds / batch, gflop / batch, rate, rate / peak))
    print('| matmul %d x %d float32 (peak; %.1f before, %.1f after) | | | %.1f | 1.00 |'
          % (FLAGS.matmul_size, FLAGS.matmul_size, peak_before, peak_after, peak))
    print('tf.profiler forward graph float ops: %.2f GFLOP / image (analytic conv count: %.2f)'
          % (profiled_gflop / batch, forward_gflop / batch))


if __name__ == '__main__':
    app.run(main)
