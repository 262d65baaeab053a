"""nets/conv_gradients.py: Conv2D gradients with wide layers' weight gradient in NCHW, against numpy written
from the formula, against TensorFlow's own gradients on the whole SSD300, and when training uses them."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import conv_gradients, nets_factory
from utils import clones, devices


def numpy_conv_gradients(inputs, filters, out_grad, stride, pads):
    """(dL/dinput, dL/dfilter) of out[n,y,x,k] = sum_{i,j,c} xp[n, y*s+i, x*s+j, c] w[i,j,c,k], xp the input
    zero-padded by pads ((top, bottom), (left, right)); g = dL/dout."""
    kh, kw = filters.shape[:2]
    padded = np.pad(inputs, [(0, 0), pads[0], pads[1], (0, 0)])
    out_h, out_w = out_grad.shape[1:3]
    filter_grad = np.zeros_like(filters, dtype=np.float64)
    padded_grad = np.zeros_like(padded, dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(i, i + stride * (out_h - 1) + 1, stride),
                      slice(j, j + stride * (out_w - 1) + 1, stride))
            filter_grad[i, j] = np.einsum('nyxc,nyxk->ck', padded[window], out_grad)
            padded_grad[window] += np.einsum('nyxk,ck->nyxc', out_grad, filters[i, j])
    height, width = inputs.shape[1:3]
    return padded_grad[:, pads[0][0]:pads[0][0] + height, pads[1][0]:pads[1][0] + width], filter_grad


@pytest.mark.parametrize('size, kernel, stride, padding, pads', [
    (19, 3, 1, 'SAME', ((1, 1), (1, 1))),        # a VGG layer: 3x3, stride 1
    (21, 3, 2, 'VALID', ((0, 0), (0, 0))),       # SSD's extra layers: 3x3, stride 2 after explicit padding
    (19, 1, 1, 'SAME', ((0, 0), (0, 0))),        # conv7: 1x1
    (20, 3, 2, 'SAME', ((0, 1), (0, 1))),        # SAME with stride 2 pads the bottom / right only
])
@pytest.mark.parametrize('split', ['none', 'images', 'rows'])
def test_wide_layer_gradients_match_the_formula(monkeypatch, size, kernel, stride, padding, pads, split):
    monkeypatch.setattr(conv_gradients, 'MIN_MACS', 0)     # small layers, so that numpy is quick
    if split == 'images':                                  # one image per chunk
        monkeypatch.setattr(conv_gradients, 'MAX_CHUNK_FLOATS', size * size * 64)
    if split == 'rows':                                    # bands of 3 output rows (the last may be shorter)
        out_width = -(-(size - (kernel - 1 if padding == 'VALID' else 0)) // stride)
        monkeypatch.setattr(conv_gradients, 'MAX_IM2COL_FLOATS', 3 * kernel * kernel * 64 * out_width)
    rng = np.random.RandomState(0)
    inputs = rng.normal(size=[2, size, size, 64]).astype(np.float32)
    filters = rng.normal(size=[kernel, kernel, 64, 64]).astype(np.float32) * 0.1
    with tf.Graph().as_default():
        x, w = tf.constant(inputs), tf.constant(filters)
        with conv_gradients.override():
            out = tf.nn.conv2d(x, w, stride, padding)
        out_grad = rng.normal(size=out.shape.as_list()).astype(np.float32)
        grads = tf.gradients(out, [x, w], tf.constant(out_grad))
        op_types = [op.type for op in tf.get_default_graph().get_operations()]
        assert 'Transpose' in op_types                                                  # the NCHW path
        calls = op_types.count('Conv2DBackpropFilter')
        assert calls == {'none': 1, 'images': 2, 'rows': 2 * -(-out_grad.shape[1] // 3)}[split]
        with tf.Session() as session:
            input_grad, filter_grad = session.run(grads)
    expected_input_grad, expected_filter_grad = numpy_conv_gradients(inputs, filters, out_grad, stride, pads)
    np.testing.assert_allclose(filter_grad, expected_filter_grad, rtol=1e-4, atol=1e-4 * np.abs(expected_filter_grad).max())
    np.testing.assert_allclose(input_grad, expected_input_grad, rtol=1e-4, atol=1e-4 * np.abs(expected_input_grad).max())


def test_row_bands():
    per_row = 3 * 3 * 64 * 300                                # conv1_2's im2col floats per output row
    assert conv_gradients.row_bands(300, per_row) == [(0, 75), (75, 150), (150, 225), (225, 300)]
    assert conv_gradients.row_bands(150, 3 * 3 * 128 * 150) == [(0, 75), (75, 150)]            # conv2_2
    assert conv_gradients.row_bands(75, 3 * 3 * 256 * 75) == [(0, 75)]                          # conv3_x: whole
    assert conv_gradients.row_bands(5, conv_gradients.MAX_IM2COL_FLOATS * 2) == [(0, 1), (1, 2), (2, 3), (3, 4),
                                                                                 (4, 5)]        # a row at least
    assert conv_gradients.row_bands(7, conv_gradients.MAX_IM2COL_FLOATS // 3) == [(0, 2), (2, 5), (5, 7)]


def test_image_chunks():
    floats = 300 * 300 * 64                                   # conv1_2's input, one image
    assert conv_gradients.image_chunks(8, floats) == [2, 2, 2, 2]
    assert conv_gradients.image_chunks(7, floats) == [2, 2, 2, 1]
    assert conv_gradients.image_chunks(2, floats) == [2]
    assert conv_gradients.image_chunks(None, floats) == [None]
    assert conv_gradients.image_chunks(3, conv_gradients.MAX_CHUNK_FLOATS * 2) == [1, 1, 1]


@pytest.mark.parametrize('filter_shape, output_shape, dilations, wide', [
    ([3, 3, 512, 512], [8, 38, 38, 512], [1, 1, 1, 1], True),      # conv4_2 at depth 1.0
    ([3, 3, 64, 64], [8, 300, 300, 64], [1, 1, 1, 1], True),       # conv1_2 at depth 1.0
    ([1, 1, 1024, 1024], [8, 19, 19, 1024], [1, 1, 1, 1], True),   # conv7
    ([3, 3, 512, 1024], [8, 19, 19, 1024], [1, 6, 6, 1], False),   # conv6: dilated
    ([3, 3, 512, 16], [8, 38, 38, 16], [1, 1, 1, 1], False),       # a box head: few outputs
    ([3, 3, 64, 64], [4, 38, 38, 64], [1, 1, 1, 1], False),        # conv4_2 at depth 0.125: 53 M MACs per image
    ([1, 1, 1024, 256], [8, 19, 19, 256], [1, 1, 1, 1], False),    # block8's 1x1: 95 M
    ([3, 3, 64, 64], [None, None, None, 64], [1, 1, 1, 1], False),  # unknown size
])
def test_which_layers_are_wide(filter_shape, output_shape, dilations, wide):
    assert conv_gradients.is_wide(filter_shape, output_shape, dilations) == wide


# SSD300's wide layers at depth 1.0, from the rule (>= 64 channels in and out, >= 1e8 multiply-adds per image,
# undilated) by hand: conv1_1 has 3 inputs, conv6 is dilated, block8's 1x1 has 95 M (1024 x 256 x 19 x 19) and
# block8's 3x3 118 M (9 x 256 x 512 x 10 x 10); the box heads' conv_loc have 16-24 outputs, block4's conv_cls
# 559 M, block7's 419 M and block8's 58 M.
SSD300_WIDE_LAYERS = {'conv1/conv1_2', 'conv2/conv2_1', 'conv2/conv2_2', 'conv3/conv3_1', 'conv3/conv3_2',
                      'conv3/conv3_3', 'conv4/conv4_1', 'conv4/conv4_2', 'conv4/conv4_3', 'conv5/conv5_1',
                      'conv5/conv5_2', 'conv5/conv5_3', 'conv7', 'block8/conv3x3', 'block4_box/conv_cls',
                      'block7_box/conv_cls'}


@pytest.mark.parametrize('depth_multiplier, expected', [(1.0, SSD300_WIDE_LAYERS), (0.125, set())])
def test_the_wide_layers_of_ssd300(depth_multiplier, expected):
    """The layers training routes through NCHW, and the start-up report counts: none at the Quick start's width."""
    net = nets_factory.get_network('ssd_300_vgg', 21, depth_multiplier)
    layers, _ = clones.special_layers(net, 'NHWC', (300, 300))
    assert {name.split('/', 1)[1] for name in layers} == expected
    line = devices.kernel_description('NHWC', nchw_weight_gradient_layers=layers)
    assert ('weight gradients of 16 wide layers in NCHW' in line) == bool(expected)


def _ssd_gradients(override):
    """Gradients of the SSD300 loss (depth 0.5: conv3 and wider are 'wide') w.r.t. every variable, on one
    fixed random image and targets."""
    rng = np.random.RandomState(1)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        net = nets_factory.get_network('ssd_300_vgg', 21, 0.5)
        images = tf.constant(rng.normal(0, 50, [1, 300, 300, 3]).astype(np.float32))
        with slim.arg_scope(net.arg_scope()), conv_gradients.override(override):
            logits, localisations, _ = net.build(images)
        labels = rng.randint(1, 21, [1, len(net.anchors)]) * (rng.rand(1, len(net.anchors)) < 0.02)
        loss = net.losses(logits, localisations, tf.constant(labels),
                          tf.constant(rng.normal(size=localisations.shape.as_list()).astype(np.float32)))['total']
        variables = tf.trainable_variables()
        gradients = tf.gradients(loss, variables)
        transposes = sum(op.type == 'Transpose' for op in tf.get_default_graph().get_operations())
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            return dict(zip([v.op.name for v in variables], session.run(gradients))), transposes


def test_ssd300_gradients_are_tensorflows_own_within_float_tolerance():
    """The changed summation order moves no gradient of the whole network by more than float round-off."""
    own, own_transposes = _ssd_gradients(False)
    overridden, transposes = _ssd_gradients(True)
    assert transposes > own_transposes       # some layers did go through NCHW
    assert own.keys() == overridden.keys()
    for name, expected in own.items():
        np.testing.assert_allclose(overridden[name], expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max() + 1e-12,
                                   err_msg=name)


@pytest.mark.parametrize('flags, data_format, use_gpus, nchw_gradients, towers', [
    ('fpu sse avx avx2 fma', 'NHWC', False, True, True),
    ('fpu sse avx avx2 fma avx512f avx512bw', 'NHWC', False, False, True),   # AVX-512: its NHWC kernel is faster
    ('fpu sse avx avx2 fma', 'NCHW', True, False, False),
    ('fpu sse avx avx2 fma', 'NHWC', True, False, False),
    ('fpu sse sse2', 'NHWC', False, False, False),                          # not measured without AVX2
])
def test_where_training_uses_them(tmp_path, flags, data_format, use_gpus, nchw_gradients, towers):
    """Where the wide layers' weight gradients go through NCHW, and where a narrow network may train on towers
    (devices.cpu_towers, tested with training's plan)."""
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(f'processor\t: 0\nflags\t\t: {flags}\n')
    assert devices.avx2_without_avx512(data_format, use_gpus, str(cpuinfo)) == nchw_gradients
    assert devices.onednn_on_avx2(data_format, use_gpus, str(cpuinfo)) == towers
    assert not devices.avx2_without_avx512('NHWC', False, str(tmp_path / 'missing'))
    assert not devices.onednn_on_avx2('NHWC', False, str(tmp_path / 'missing'))
