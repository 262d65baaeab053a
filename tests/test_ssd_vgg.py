"""SSD300 / SSD512 graphs at a small depth multiplier: shapes, gradients, layouts, NCHW == NHWC."""
import logging

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import nets_factory, ssd_layers
from utils.errors import UserError

SMALL = 0.125


def build(model_name, batch=2, num_classes=4, depth_multiplier=SMALL, data_format='NHWC', reuse=None, net=None):
    net = net or nets_factory.get_network(model_name, num_classes, depth_multiplier)
    size = net.default_image_size
    images = tf.placeholder(tf.float32, [batch, size, size, 3])
    with slim.arg_scope(net.arg_scope(weight_decay=0.0005, data_format=data_format)):
        logits, loc, end_points = net.build(images, is_training=True, data_format=data_format, reuse=reuse)
    return net, images, logits, loc, end_points


@pytest.mark.parametrize('model_name,num_anchors,feature_sizes', [
    ('ssd_300_vgg', 8732, [38, 19, 10, 5, 3, 1]),
    ('ssd_512_vgg', 24564, [64, 32, 16, 8, 4, 2, 1])])
def test_forward_and_backward(model_name, num_anchors, feature_sizes):
    with tf.Graph().as_default():
        net, images, logits, loc, end_points = build(model_name)
        assert logits.shape.as_list() == [2, num_anchors, 4] and loc.shape.as_list() == [2, num_anchors, 4]
        assert [end_points[layer].shape.as_list()[1] for layer in net.params.feat_layers] == feature_sizes
        assert net.anchors.shape == (num_anchors, 4)
        labels = tf.constant(np.random.RandomState(0).randint(0, 4, (2, num_anchors)), tf.int64)
        losses = net.losses(logits, loc, labels, tf.zeros_like(loc))
        total = losses['total'] + tf.add_n(tf.losses.get_regularization_losses())
        variables = tf.trainable_variables()
        grads = tf.gradients(total, variables)
        assert all(g is not None for g in grads)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            feed = {images: np.random.RandomState(1).normal(0, 50, images.shape.as_list())}
            loss_value, grad_values = sess.run([total, grads], feed)
    assert np.isfinite(loss_value) and loss_value > 0
    assert all(np.isfinite(g).all() for g in grad_values)
    assert np.abs(grad_values[0]).sum() > 0   # conv1_1 is reached through the whole net


def test_depth_multiplier_scales_trunk_not_heads():
    with tf.Graph().as_default():
        build('ssd_300_vgg', depth_multiplier=0.3)
        shapes = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    assert shapes['ssd_300_vgg/conv1/conv1_1/weights'] == [3, 3, 3, 19]          # round(64 * 0.3)
    assert shapes['ssd_300_vgg/conv7/weights'] == [1, 1, 307, 307]                # round(1024 * 0.3)
    assert shapes['ssd_300_vgg/block4_box/L2Normalization/gamma'] == [154]
    assert shapes['ssd_300_vgg/block4_box/conv_loc/weights'] == [3, 3, 154, 16]    # 4 * A unscaled
    assert shapes['ssd_300_vgg/block7_box/conv_cls/weights'] == [3, 3, 307, 24]    # C * A unscaled
    with tf.Graph().as_default():
        build('ssd_300_vgg', depth_multiplier=0.01)
        assert tf.global_variables()[0].shape.as_list() == [3, 3, 3, 8]            # at least 8 channels


def test_box_head_layout_follows_published_checkpoint():
    """Channel a*4 + j of conv_loc is anchor a's (tx, ty, tw, th)[j]; conv_cls channel a*C + c is class c.
    block11's feature map is 1x1, so its 3x3 SAME heads see only their centre tap: the reference is that
    tap's matrix product with the checkpoint-layout variables, in numpy."""
    with tf.Graph().as_default():
        net, images, logits, loc, end_points = build('ssd_300_vgg', batch=1)
        variables = {name: tf.global_variables(f'ssd_300_vgg/block11_box/{name}/')
                     for name in ('conv_loc', 'conv_cls')}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run([v.assign(tf.random.normal(v.shape, seed=3)) for vs in variables.values() for v in vs])
            feed = {images: np.random.RandomState(2).normal(0, 50, [1, 300, 300, 3])}
            logits_v, loc_v, feature, heads = sess.run([logits, loc, end_points['block11'], variables], feed)
    assert np.count_nonzero(feature) > 0

    def centre_tap(name):
        weights, biases = sorted(heads[name], key=lambda value: value.ndim, reverse=True)
        return feature[0, 0, 0] @ weights[1, 1] + biases                                   # [16]
    txywh = centre_tap('conv_loc').reshape(4, 4)
    np.testing.assert_allclose(loc_v[0, -4:], txywh[:, [1, 0, 3, 2]], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits_v[0, -4:], centre_tap('conv_cls').reshape(4, 4), rtol=1e-4, atol=1e-4)


def test_nchw_matches_nhwc():
    with tf.Graph().as_default():
        net, images, logits, loc, _ = build('ssd_300_vgg', batch=1)
        variables = tf.global_variables()
        _, images_nchw, logits_nchw, loc_nchw, _ = build('ssd_300_vgg', batch=1, data_format='NCHW',
                                                          reuse=True, net=net)
        assert tf.global_variables() == variables                # the same variables either way
        feed = np.random.RandomState(3).normal(0, 50, [1, 300, 300, 3])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            try:
                nchw = sess.run([logits_nchw, loc_nchw], {images_nchw: feed})
            except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError) as error:
                pytest.skip('needs a GPU machine to run (this CPU build has no NCHW kernels: %s)'
                            % str(error).splitlines()[0])
            nhwc = sess.run([logits, loc], {images: feed})
    for a, b in zip(nhwc, nchw):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(a).max())


@pytest.mark.parametrize('data_format', ['NHWC', 'NCHW'])
def test_l2_normalization(data_format):
    values = np.random.RandomState(4).normal(size=[2, 3, 4, 5]).astype(np.float32)   # NHWC
    with tf.Graph().as_default():
        inputs = tf.constant(values if data_format == 'NHWC' else values.transpose(0, 3, 1, 2))
        out = ssd_layers.l2_normalization(inputs, 20., data_format)
        gamma = tf.global_variables()[0]
        assert gamma.op.name == 'L2Normalization/gamma' and gamma.shape.as_list() == [5]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(gamma.assign(np.arange(1, 6, dtype=np.float32) * 20.))
            got = sess.run(out)
    if data_format == 'NCHW':
        got = got.transpose(0, 2, 3, 1)
    expected = values / np.sqrt((values ** 2).sum(-1, keepdims=True)) * np.arange(1, 6) * 20.
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bad_inputs_raise_user_errors():
    with pytest.raises(UserError, match='model_name'):
        nets_factory.get_network('ssd_301', 21)
    with pytest.raises(UserError, match='anchor_set'):
        nets_factory.get_network('ssd_300_vgg', 21, anchor_set='yolo')
    with pytest.raises(UserError, match='depth_multiplier'):
        nets_factory.get_network('ssd_300_vgg', 21, depth_multiplier=0)
    with tf.Graph().as_default():
        net = nets_factory.get_network('ssd_300_vgg', 21, SMALL)
        with pytest.raises(UserError, match='300x300'):
            net.build(tf.placeholder(tf.float32, [1, 320, 320, 3]))


def test_no_weight_decay_builds_without_a_regularizer_or_its_log_line(caplog):
    caplog.set_level(logging.INFO, logger='tensorflow')
    with tf.Graph().as_default():
        with slim.arg_scope(ssd_layers.ssd_arg_scope(0.0, 'NHWC')):
            slim.conv2d(tf.zeros([1, 8, 8, 3]), 4, [3, 3])
        assert not tf.losses.get_regularization_losses()
    assert not [record for record in caplog.records if 'Scale of 0' in record.getMessage()]
