"""nets/column_pairs.py: a narrow 3x3 convolution computed on pairs of columns equals the direct one (numpy and
TensorFlow's own convolution as references, forward and gradients), the pair filter holds the taps the formula
puts where, and the whole network computes the same function with the same variables either way."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import column_pairs, nets_factory, ssd_layers
from utils import devices

from tests.gradient_checks import assert_gradients_match


def numpy_same_conv(x, w, b):
    """y[n, i, j, o] = b[o] + sum_{u, v, c} x_pad[n, i + u, j + v, c] w[u, v, c, o], x_pad = x with one zero row and
    column on each side (SAME for a 3x3 kernel)."""
    x_pad = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    height, width = x.shape[1:3]
    y = np.zeros(x.shape[:3] + (w.shape[3],))
    for u in range(3):
        for v in range(3):
            y += np.einsum('nhwc,co->nhwo', x_pad[:, u:u + height, v:v + width], w[u, v])
    return y + b


@pytest.mark.parametrize('shape, channels_out, activation', [
    ((2, 6, 8, 3), 8, tf.nn.relu),     # conv1_1's channels, an even height
    ((1, 5, 4, 8), 4, None),           # conv1_2's inputs, an odd height, no activation
    ((1, 3, 2, 1), 1, None)])          # the smallest pairable map: one pair of columns
def test_matches_numpy(shape, channels_out, activation):
    rng = np.random.RandomState(0)
    x = rng.randn(*shape).astype(np.float32)
    w = rng.randn(3, 3, shape[3], channels_out).astype(np.float32)
    b = rng.randn(channels_out).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        got = sess.run(column_pairs.conv2d(tf.constant(x), tf.constant(w), tf.constant(b), activation))
    expected = numpy_same_conv(x, w, b)
    np.testing.assert_allclose(got, np.maximum(expected, 0.) if activation else expected, rtol=1e-5, atol=1e-5)


def test_gradients_match_the_direct_convolution():
    """Gradients of sum(y * dy) with respect to the input, the weights and the bias, against tf.nn.conv2d's."""
    rng = np.random.RandomState(1)
    x, w = rng.randn(2, 7, 10, 8).astype(np.float32), rng.randn(3, 3, 8, 8).astype(np.float32)
    b, dy = rng.randn(8).astype(np.float32), rng.randn(2, 7, 10, 8).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        inputs, weights, biases = tf.constant(x), tf.constant(w), tf.constant(b)
        direct = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(inputs, weights, 1, 'SAME'), biases))
        paired = column_pairs.conv2d(inputs, weights, biases, tf.nn.relu)
        grads = [tf.gradients(tf.reduce_sum(y * dy), [inputs, weights, biases]) for y in (direct, paired)]
        expected, got = sess.run(grads)
    for name, g, e in zip(('input', 'weights', 'bias'), got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=name)


def test_paired_filter_puts_each_tap_where_the_formula_says():
    """One channel in and out, taps k0 k1 k2 along a row: K'[., p, s, t] = K[., 2p + s - t] or 0, by hand."""
    taps = np.array([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]], np.float32)    # [row, tap]
    with tf.Graph().as_default(), tf.Session() as sess:
        paired = sess.run(column_pairs.paired_filter(tf.constant(taps[:, :, None, None])))
    assert paired.shape == (3, 2, 2, 2)
    for row, (k0, k1, k2) in enumerate(taps):
        # [p][s][t]: p = which pair, s = column within the input pair, t = column within the output pair.
        expected = [[[k0, 0.], [k1, k0]],
                    [[k2, k1], [0., k2]]]
        np.testing.assert_array_equal(paired[row], expected)


@pytest.mark.parametrize('cpu_flags, onednn_on, gpu_present, max_cpu_isa, pays', [
    ({'avx2', 'avx512f'}, True, False, None, True),
    ({'avx2', 'avx512f'}, True, False, 'AVX512_CORE_AMX', True),
    ({'avx2', 'avx512f'}, True, False, 'avx10_1_512', True),
    ({'avx2', 'avx512f'}, True, False, 'DEFAULT', True),
    ({'avx2', 'avx512f'}, True, False, 'AVX2', False),     # 8-float vectors: 8 channels fill one
    ({'avx2', 'avx512f'}, True, False, 'AVX2_VNNI', False),
    ({'avx2'}, True, False, None, False),
    ({'avx2', 'avx512f'}, False, False, None, False),     # TensorFlow's own kernels
    ({'avx2', 'avx512f'}, True, True, None, False)])      # cuDNN
def test_pairs_pay_only_with_onednn_on_avx512(cpu_flags, onednn_on, gpu_present, max_cpu_isa, pays):
    assert column_pairs.pairs_pay_here(cpu_flags, onednn_on, gpu_present, max_cpu_isa) == pays


@pytest.mark.parametrize('input_shape, channels_out, data_format, pairable', [
    ([2, 300, 300, 3], 8, 'NHWC', True),
    ([None, 300, 300, 8], 8, 'NHWC', True),
    ([2, 300, 300, 8], 16, 'NHWC', False),    # fills an AVX-512 vector already
    ([2, 300, 301, 8], 8, 'NHWC', False),     # odd width
    ([2, 300, None, 8], 8, 'NHWC', False),
    ([2, None, 300, 8], 8, 'NHWC', False),
    ([2, 8, 300, 300], 8, 'NCHW', False)])
def test_which_layers_are_pairable(input_shape, channels_out, data_format, pairable):
    assert column_pairs.is_pairable(input_shape, channels_out, data_format) == pairable


def _network_outputs(paired, images, weights):
    """SSD300 at depth 0.125 on `images`: (variable names, paired layers, [logits, offsets, weight decay] + every
    gradient of the loss), with the variables loaded from `weights` (filled from this graph's initial values
    when empty)."""
    with tf.Graph().as_default() as graph:
        net = nets_factory.get_network('ssd_300_vgg', 5, depth_multiplier=0.125)
        with slim.arg_scope(net.arg_scope(data_format='NHWC')):
            logits, loc, _ = net.build(tf.constant(images), paired_columns=paired)
        rng = np.random.RandomState(2)
        labels = rng.randint(0, 5, [2, len(net.anchors)]) * (rng.rand(2, len(net.anchors)) < .02)
        decay = tf.losses.get_regularization_losses()
        assert len(decay) == 35    # one per weight tensor: the paired layers' included
        total = net.losses(logits, loc, tf.constant(labels), tf.zeros_like(loc) + .1)['total'] + tf.add_n(decay)
        variables = tf.trainable_variables()
        grads = tf.gradients(total, variables)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for variable in variables:
                name = variable.op.name
                weights[name] = weights[name] if name in weights else sess.run(variable)
                variable.load(weights[name], sess)
            values = sess.run([logits, loc, tf.stack(decay)] + grads)
    return [variable.op.name for variable in variables], column_pairs.paired_layers(graph), values


def test_paired_and_direct_networks_agree():
    """The whole SSD300 at the Quick start's width, same weights and batch: the same variables (checkpoints
    load either way), conv1_1 and conv1_2 paired, equal logits and offsets, and every gradient within round-off."""
    images = np.random.RandomState(1).normal(0, 50, [2, 300, 300, 3]).astype(np.float32)
    weights = {}
    direct_names, direct_paired, direct = _network_outputs(False, images, weights)
    paired_names, paired_layers, paired = _network_outputs(True, images, weights)
    assert direct_names == paired_names and direct_paired == []
    assert paired_layers == ['ssd_300_vgg/conv1/conv1_1', 'ssd_300_vgg/conv1/conv1_2']
    for direct_value, paired_value in zip(direct[:3], paired[:3]):
        scale = np.abs(direct_value).max()
        np.testing.assert_allclose(paired_value / scale, direct_value / scale, atol=2e-5)
    assert_gradients_match(direct_names, paired[3:], direct[3:])


def test_training_pairs_where_they_pay_and_inference_never():
    """paired_columns' default: the training network pairs conv1 where this process's kernels gain from it;
    an inference network (is_training=False) keeps the direct form, whose forward pass alone gained nothing."""
    def paired(is_training):
        with tf.Graph().as_default() as graph:
            net = nets_factory.get_network('ssd_300_vgg', 5, depth_multiplier=0.125)
            with slim.arg_scope(net.arg_scope(data_format='NHWC')):
                net.build(tf.zeros([1, 300, 300, 3]), is_training=is_training)
        return column_pairs.paired_layers(graph)
    assert bool(paired(True)) == ssd_layers.paired_columns_available()
    assert paired(False) == []


def test_a_wider_network_pairs_nothing():
    """At depth 0.25 conv1 has 16 channels, a whole AVX-512 vector: no layer is paired."""
    with tf.Graph().as_default() as graph:
        net = nets_factory.get_network('ssd_300_vgg', 5, depth_multiplier=0.25)
        with slim.arg_scope(net.arg_scope(data_format='NHWC')):
            net.build(tf.zeros([1, 300, 300, 3]), paired_columns=True)
    assert column_pairs.paired_layers(graph) == []


@pytest.mark.parametrize('layers, listed', [
    ((), None),
    (('ssd_300_vgg/conv1/conv1_1', 'ssd_300_vgg/conv1/conv1_2'), 'conv1_1 and conv1_2'),
    (('s/conv1/conv1_1', 's/conv1/conv1_2', 's/conv2/conv2_1', 's/conv2/conv2_2'),   # depth 0.0625
     'conv1_1, conv1_2, conv2_1 and conv2_2')])
def test_the_kernels_line_names_the_paired_layers(layers, listed):
    line = devices.kernel_description('NHWC', paired_column_layers=layers)
    assert ('on column pairs' in line) == bool(listed)
    assert listed is None or f', {listed} on column pairs (8 channels half-fill an AVX-512 vector)' in line
