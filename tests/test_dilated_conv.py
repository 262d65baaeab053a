"""conv6's dilated convolution: native (one Conv2D with dilations) and by-taps (one 1x1 Conv2D per tap) forms
agree with a numpy reference and with each other on the whole network (outputs and gradients), with slim's
variables."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import column_pairs, nets_factory, ssd_layers

from tests.gradient_checks import assert_gradients_match

pytestmark = pytest.mark.skipif(not ssd_layers.native_dilation_available(),
                                reason='native dilated conv needs oneDNN (TF_ENABLE_ONEDNN_OPTS=1) or a GPU')


def numpy_dilated_conv(x, w, b, rate):
    """y[n, i, j, o] = relu(b[o] + sum_{u, v, c} x_pad[n, i + u*rate, j + v*rate, c] w[u, v, c, o]), SAME:
    rate * (k - 1) zeros per axis, the smaller half before (TensorFlow's rule)."""
    k = w.shape[0]
    total = rate * (k - 1)
    pad = (total // 2, total - total // 2)
    x_pad = np.pad(x, [(0, 0), pad, pad, (0, 0)])
    height, width = x.shape[1:3]
    y = np.zeros(x.shape[:3] + (w.shape[3],), np.float64)
    for u in range(k):
        for v in range(k):
            window = x_pad[:, u * rate:u * rate + height, v * rate:v * rate + width, :]
            y += np.einsum('nhwc,co->nhwo', window, w[u, v])
    return np.maximum(y + b, 0.)


# (native, data format, kernel size, rate, map height, map width): conv6's shape; taps partly and wholly
# in the padding (rate 6 on a 5-pixel map); an even kernel, whose SAME padding is uneven.
@pytest.mark.parametrize('native, data_format, kernel_size, rate, height, width', [
    (True, 'NHWC', 3, 3, 11, 11), (False, 'NHWC', 3, 3, 11, 11), (False, 'NHWC', 3, 6, 5, 8),
    (False, 'NHWC', 2, 3, 7, 6), (False, 'NCHW', 3, 3, 11, 9), (False, 'NCHW', 2, 2, 6, 7)])
def test_dilated_conv_matches_numpy_and_slim_variables(native, data_format, kernel_size, rate, height, width):
    rng = np.random.RandomState(0)
    x = rng.randn(2, height, width, 3).astype(np.float32)
    to_layout = (lambda t: t) if data_format == 'NHWC' else (lambda t: np.transpose(t, [0, 3, 1, 2]))
    with tf.Graph().as_default():
        inputs = tf.constant(to_layout(x))
        with slim.arg_scope(ssd_layers.ssd_arg_scope(0.0005, data_format)):
            ours = ssd_layers.dilated_conv2d(inputs, 4, kernel_size, rate, native, scope='mine')
        with slim.arg_scope(ssd_layers.ssd_arg_scope(0.0005, 'NHWC')):
            reference_layer = slim.conv2d(tf.constant(x), 4, [kernel_size, kernel_size], rate=rate, scope='slim')
        shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
        weight_shape = [kernel_size, kernel_size, 3, 4]
        assert shapes == {'mine/weights': weight_shape, 'mine/biases': [4],
                          'slim/weights': weight_shape, 'slim/biases': [4]}
        assert len(tf.losses.get_regularization_losses()) == 2
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            weights, biases = sess.run(['mine/weights:0', 'mine/biases:0'])
            biases = rng.randn(4).astype(np.float32)
            sess.run(tf.assign(tf.global_variables('mine/biases')[0], biases))
            got = sess.run(ours)
            sess.run([tf.assign(tf.global_variables('slim/weights')[0], weights),
                      tf.assign(tf.global_variables('slim/biases')[0], biases)])
            slim_out = sess.run(reference_layer)
    expected = numpy_dilated_conv(x, weights, biases, rate)
    np.testing.assert_allclose(got, to_layout(expected), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(slim_out, expected, rtol=1e-4, atol=1e-4)


def test_by_taps_refuses_what_it_cannot_compute():
    """A padding other than SAME, and a map of unknown size: a ValueError naming the problem, at graph build."""
    with tf.Graph().as_default():
        with slim.arg_scope(ssd_layers.ssd_arg_scope(0.0005, 'NHWC')):
            with slim.arg_scope([slim.conv2d], padding='VALID'), pytest.raises(
                    ValueError, match='conv6: the dilated convolution by taps takes padding SAME, got VALID'):
                ssd_layers.dilated_conv2d(tf.zeros([1, 9, 9, 3]), 4, 3, 2, False, scope='conv6')
        unknown_height = tf.placeholder(tf.float32, [1, None, 9, 3])
        with pytest.raises(ValueError, match='needs a known height and width'):
            ssd_layers.dilated_conv_by_taps(unknown_height, tf.zeros([3, 3, 3, 4]), 2, 'NHWC')


def test_native_and_by_taps_networks_agree():
    """The whole SSD300 (depth 0.125), same weights and batch: logits, offsets and every gradient."""
    rng = np.random.RandomState(1)
    images = rng.normal(0, 50, [2, 300, 300, 3]).astype(np.float32)
    results, weights = [], {}
    for native in (True, False):
        with tf.Graph().as_default():
            net = nets_factory.get_network('ssd_300_vgg', 5, depth_multiplier=0.125)
            with slim.arg_scope(net.arg_scope(data_format='NHWC')):
                logits, loc, _ = net.build(tf.constant(images), native_dilation=native)
            ops = {op.type for op in tf.get_default_graph().get_operations()}
            assert ('AddN' in ops) != native
            labels = tf.constant(np.random.RandomState(2).randint(0, 5, [2, len(net.anchors)]) * (np.random.RandomState(3).rand(2, len(net.anchors)) < .02))
            total = net.losses(logits, loc, labels, tf.zeros_like(loc) + .1)['total']
            variables = tf.trainable_variables()
            grads = tf.gradients(total, variables)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                for variable in variables:  # the first graph's initial values, by name
                    name = variable.op.name
                    weights[name] = weights[name] if name in weights else sess.run(variable)
                    variable.load(weights[name], sess)
                results.append(sess.run([logits, loc] + grads))
            names = [variable.op.name for variable in variables]
    for native_value, taps_value in zip(results[0][:2], results[1][:2]):
        scale = np.abs(taps_value).max()
        np.testing.assert_allclose(native_value / scale, taps_value / scale, atol=2e-5)
    assert_gradients_match(names, results[0][2:], results[1][2:])


def test_exported_graph_runs_on_every_kernel_set():
    """The SavedModel's conv6 is the by-taps form (a server without oneDNN cannot run a dilated Conv2D);
    in-process inference (detect.py, eval) takes the native one. Both run conv1 directly (column pairs gain
    only in training's backward pass)."""
    from deployment import serving_model
    from utils import inference_model
    from utils.model_config import ModelConfig
    config = ModelConfig(num_classes=3, class_names=('none', 'a', 'b'), depth_multiplier=0.125)
    options = {'score_threshold': 0.01, 'nms_threshold': 0.45, 'top_k': 20, 'keep_top_k': 10}

    def dilated_convs(graph):
        return [op.name for op in graph.get_operations()
                if op.type == 'Conv2D' and max(op.get_attr('dilations')) > 1]
    with tf.Graph().as_default() as graph:
        serving_model.build_signatures(config, options)
        assert not dilated_convs(graph)
        assert not any(op.type == 'SpaceToBatchND' for op in graph.get_operations())
        assert any(op.type == 'AddN' and 'conv6' in op.name for op in graph.get_operations())
        assert not column_pairs.paired_layers(graph)
    with tf.Graph().as_default() as graph:
        inference_model.detect_images(tf.zeros([1, 50, 60, 3], tf.uint8), config, options)
        assert len(dilated_convs(graph)) == 1
        assert not column_pairs.paired_layers(graph)
