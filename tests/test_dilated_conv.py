"""conv6's dilated convolution: native (one Conv2D with dilations) and space_to_batch forms agree with a
numpy reference and with each other on the whole network (outputs and gradients), with slim's variables."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import nets_factory, ssd_layers

from tests.gradient_checks import assert_gradients_match

pytestmark = pytest.mark.skipif(not ssd_layers.native_dilation_available(),
                                reason='native dilated conv needs oneDNN (TF_ENABLE_ONEDNN_OPTS=1) or a GPU')


def numpy_dilated_conv(x, w, b, rate):
    """y[n, i, j, o] = relu(b[o] + sum_{u, v, c} x_pad[n, i + u*rate, j + v*rate, c] w[u, v, c, o]), SAME."""
    k = w.shape[0]
    pad = rate * (k - 1) // 2
    x_pad = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    height, width = x.shape[1:3]
    y = np.zeros(x.shape[:3] + (w.shape[3],), np.float64)
    for u in range(k):
        for v in range(k):
            window = x_pad[:, u * rate:u * rate + height, v * rate:v * rate + width, :]
            y += np.einsum('nhwc,co->nhwo', window, w[u, v])
    return np.maximum(y + b, 0.)


@pytest.mark.parametrize('native', [True, False])
def test_dilated_conv_matches_numpy_and_slim_variables(native):
    rng = np.random.RandomState(0)
    x = rng.randn(2, 11, 11, 3).astype(np.float32)
    with tf.Graph().as_default():
        inputs = tf.constant(x)
        with slim.arg_scope(ssd_layers.ssd_arg_scope(0.0005, 'NHWC')):
            ours = ssd_layers.dilated_conv2d(inputs, 4, 3, 3, native, scope='mine')
            reference_layer = slim.conv2d(inputs, 4, [3, 3], rate=3, scope='slim')
        shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
        assert shapes == {'mine/weights': [3, 3, 3, 4], 'mine/biases': [4],
                          'slim/weights': [3, 3, 3, 4], 'slim/biases': [4]}
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
    expected = numpy_dilated_conv(x, weights, biases, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(slim_out, expected, rtol=1e-4, atol=1e-4)


def test_native_and_space_to_batch_networks_agree():
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
            assert ('SpaceToBatchND' in ops) != native
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
    for native_value, s2b_value in zip(results[0][:2], results[1][:2]):
        scale = np.abs(s2b_value).max()
        np.testing.assert_allclose(native_value / scale, s2b_value / scale, atol=2e-5)
    assert_gradients_match(names, results[0][2:], results[1][2:])


def test_exported_graph_runs_on_every_kernel_set():
    """The SavedModel's conv6 is the space_to_batch form (a server without oneDNN cannot run a dilated Conv2D);
    in-process inference (detect.py, eval) takes the native one."""
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
        assert any(op.type == 'SpaceToBatchND' for op in graph.get_operations())
    with tf.Graph().as_default() as graph:
        inference_model.detect_images(tf.zeros([1, 50, 60, 3], tf.uint8), config, options)
        assert len(dilated_convs(graph)) == 1
