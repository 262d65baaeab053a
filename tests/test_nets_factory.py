"""Factory, and restoring checkpoints with the published names and shapes (checkpoints.md) at depth 1.0."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import nets_factory
from utils import checkpoints

# ssd_300_vgg.ckpt (SSD-Tensorflow, VOC, 21 classes), written out from tests/data/published_checkpoints.md.
TRUNK = [('conv1/conv1_1', 3, 64), ('conv1/conv1_2', 64, 64), ('conv2/conv2_1', 64, 128),
         ('conv2/conv2_2', 128, 128), ('conv3/conv3_1', 128, 256), ('conv3/conv3_2', 256, 256),
         ('conv3/conv3_3', 256, 256), ('conv4/conv4_1', 256, 512), ('conv4/conv4_2', 512, 512),
         ('conv4/conv4_3', 512, 512), ('conv5/conv5_1', 512, 512), ('conv5/conv5_2', 512, 512),
         ('conv5/conv5_3', 512, 512)]
HEADS = [('block4', 512, 4), ('block7', 1024, 6), ('block8', 512, 6), ('block9', 256, 6), ('block10', 256, 4),
         ('block11', 256, 4)]


def conv(name, kernel, cin, cout):
    return [(name + '/weights', [kernel, kernel, cin, cout]), (name + '/biases', [cout])]


def published_ssd300_shapes(num_classes=21):
    shapes = [item for name, cin, cout in TRUNK for item in conv('ssd_300_vgg/' + name, 3, cin, cout)]
    shapes += conv('ssd_300_vgg/conv6', 3, 512, 1024) + conv('ssd_300_vgg/conv7', 1, 1024, 1024)
    for block, cin, mid, cout in [('block8', 1024, 256, 512), ('block9', 512, 128, 256),
                                  ('block10', 256, 128, 256), ('block11', 256, 128, 256)]:
        shapes += conv('ssd_300_vgg/%s/conv1x1' % block, 1, cin, mid)
        shapes += conv('ssd_300_vgg/%s/conv3x3' % block, 3, mid, cout)
    shapes.append(('ssd_300_vgg/block4_box/L2Normalization/gamma', [512]))
    for block, cin, anchors in HEADS:
        shapes += conv('ssd_300_vgg/%s_box/conv_loc' % block, 3, cin, 4 * anchors)
        shapes += conv('ssd_300_vgg/%s_box/conv_cls' % block, 3, cin, num_classes * anchors)
    return dict(shapes)


def vgg16_shapes():
    """TF-Slim vgg_16.ckpt without fc6 / fc7 (411 MB and 64 MB of values SSD never restores)."""
    shapes = [item for name, cin, cout in TRUNK for item in conv('vgg_16/' + name, 3, cin, cout)]
    return dict(shapes + conv('vgg_16/fc8', 1, 4096, 1000))


def write_checkpoint(path, shapes, seed):
    """Plain variables with these names and shapes, random values, saved with a global step."""
    rng = np.random.RandomState(seed)
    values = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    with tf.Graph().as_default():
        variables = [tf.Variable(tf.zeros(shape), name=name) for name, shape in shapes.items()]
        tf.train.get_or_create_global_step()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for variable in variables:
                variable.load(values[variable.op.name], sess)
            tf.train.Saver().save(sess, str(path))
    return values


@pytest.fixture(scope='module')
def published_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('ssd300') / 'ssd_300_vgg.ckpt'
    return path, write_checkpoint(path, published_ssd300_shapes(), seed=0)


def build_full_size(num_classes, anchor_sizes=None):
    net = nets_factory.get_network('ssd_300_vgg', num_classes, anchor_sizes=anchor_sizes)
    with slim.arg_scope(net.arg_scope()):
        net.build(tf.placeholder(tf.float32, [1, 300, 300, 3]), is_training=False)
    return net, tf.global_variables()


# --anchor_sizes (e.g. fitted by auto) keeps the anchors per cell, so every published variable still fits.
@pytest.mark.parametrize('anchor_sizes', [None, (12.6, 20.6, 21.1, 21.1, 207., 261., 315.)], ids=['built_in', 'given'])
def test_published_checkpoint_restores_every_variable(published_checkpoint, anchor_sizes):
    path, values = published_checkpoint
    with tf.Graph().as_default():
        net, variables = build_full_size(21, anchor_sizes)
        assert net.params.anchor_sizes[0] == ((anchor_sizes or (21., 45.))[0], (anchor_sizes or (21., 45.))[1])
        variables_map = checkpoints.checkpoint_variable_map(variables, 'ssd_300_vgg')
        assert {name: v.shape.as_list() for name, v in variables_map.items()} == published_ssd300_shapes()
        assert checkpoints.find_mismatches(str(path), variables_map) == []
        with tf.Session() as sess:
            tf.train.Saver(variables_map).restore(sess, str(path))
            restored = sess.run(variables_map)
    for name, value in restored.items():
        np.testing.assert_array_equal(value, values[name])


def test_vgg16_checkpoint_restores_the_trunk(tmp_path):
    path = tmp_path / 'vgg_16.ckpt'
    values = write_checkpoint(path, vgg16_shapes(), seed=1)
    with tf.Graph().as_default():
        net, variables = build_full_size(21)
        trunk = [v for v in variables if v.op.name.split('/')[1] in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')]
        assert len(trunk) == 26
        trunk_map = checkpoints.checkpoint_variable_map(trunk, net.scope, 'vgg_16')
        assert 'vgg_16/conv1/conv1_1/weights' in trunk_map
        assert checkpoints.find_mismatches(str(path), trunk_map) == []
        # Without excluding the SSD-only layers, every one of them is reported missing.
        full_map = checkpoints.checkpoint_variable_map(variables, net.scope, 'vgg_16')
        missing = checkpoints.find_mismatches(str(path), full_map)
        assert len(missing) == len(variables) - 26 and all(m.checkpoint_shape is None for m in missing)
        with tf.Session() as sess:
            tf.train.Saver(trunk_map).restore(sess, str(path))
            restored = sess.run(trunk_map)
    for name, value in restored.items():
        np.testing.assert_array_equal(value, values[name])


def test_other_num_classes_mismatches_exactly_the_class_heads(published_checkpoint):
    path, _ = published_checkpoint
    with tf.Graph().as_default():
        net, variables = build_full_size(5)
        variables_map = checkpoints.checkpoint_variable_map(variables, net.scope)
        mismatches = checkpoints.find_mismatches(str(path), variables_map)
        expected = sorted('ssd_300_vgg/%s_box/conv_cls/%s' % (block, kind) for block, _, _ in HEADS
                          for kind in ('weights', 'biases'))
        assert [m.checkpoint_name for m in mismatches] == expected
        block10_weights = mismatches[1]
        assert block10_weights == ('ssd_300_vgg/block10_box/conv_cls/weights', [3, 3, 256, 20], [3, 3, 256, 84])
        assert all(m.checkpoint_name.startswith(tuple(net.box_head_scopes)) for m in mismatches)
        with tf.Session() as sess, pytest.raises(tf.errors.InvalidArgumentError):
            tf.train.Saver(variables_map).restore(sess, str(path))


def test_factory_and_default_data_format():
    assert nets_factory.MODEL_NAMES == ('ssd_300_vgg', 'ssd_512_vgg')
    net = nets_factory.get_network('ssd_512_vgg', 11, 0.5, anchor_set='caffe')
    assert (net.scope, net.default_image_size, net.num_classes, net.anchors.shape) == \
        ('ssd_512_vgg', 512, 11, (24564, 4))
    expected = 'NCHW' if tf.config.list_physical_devices('GPU') else 'NHWC'
    assert nets_factory.default_data_format() == expected
