"""Layers shared by SSD300 and SSD512: VGG-16 trunk, extra blocks, L2 normalisation, box heads.

Variable names follow SSD-Tensorflow's published checkpoints (see tests/data/published_checkpoints.md),
e.g. <scope>/conv4/conv4_3/weights, <scope>/block8/conv3x3/biases, <scope>/block4_box/conv_cls/weights,
<scope>/block4_box/L2Normalization/gamma. Layers run in `data_format` (NHWC or NCHW); the box heads
hand back NHWC-ordered, flattened outputs so the anchor order is the same either way.
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf
import tf_slim as slim
from tensorflow.python.util import _pywrap_util_port

from nets import column_pairs
from utils import host

# Published box heads (SSD-Tensorflow, converted from Caffe) emit (tx, ty, tw, th) per anchor; the
# project's encoding (nets/box_coder.py) is (ty, tx, th, tw). This permutation maps one to the other.
CHECKPOINT_TO_PROJECT_LOC_ORDER = (1, 0, 3, 2)


def channel_axis(data_format):
    """Index of the channel axis of a 4-D tensor in `data_format`."""
    return 3 if data_format == 'NHWC' else 1


def pad_spatial(inputs, pad, data_format):
    """Zero-pad `pad` pixels on each side of H and W (Caffe's symmetric conv padding)."""
    spatial = [[pad, pad], [pad, pad]]
    paddings = [[0, 0]] + spatial + [[0, 0]] if data_format == 'NHWC' else [[0, 0], [0, 0]] + spatial
    return tf.pad(inputs, paddings)


def l2_normalization(inputs, initial_scale, data_format, scope='L2Normalization'):
    """ParseNet L2 normalisation over channels: y = gamma_c * x_c / sqrt(max(sum_c' x_c'^2, 1e-12))
    (tf.nn.l2_normalize's epsilon).

    One learnt scale gamma per channel, initialised to `initial_scale` (20 for conv4_3).
    """
    axis = channel_axis(data_format)
    num_channels = inputs.shape.as_list()[axis]
    with tf.variable_scope(scope, values=[inputs]):
        gamma = slim.model_variable('gamma', shape=[num_channels],
                                    initializer=tf.constant_initializer(initial_scale))
        normalized = tf.nn.l2_normalize(inputs, axis=axis, epsilon=1e-12)
        if data_format == 'NCHW':
            gamma = tf.reshape(gamma, [1, num_channels, 1, 1])
        return normalized * gamma


def native_dilation_available():
    """Whether this process's conv kernels take dilations directly: oneDNN's CPU kernels (on when
    TF_ENABLE_ONEDNN_OPTS=1, which the scripts set) and cuDNN do; TensorFlow's Eigen CPU kernels do not."""
    return _pywrap_util_port.IsMklEnabled() or bool(tf.config.list_physical_devices('GPU'))


def paired_columns_available():
    """Whether this process's kernels gain from computing narrow layers on column pairs (nets/column_pairs.py):
    oneDNN on a CPU with AVX-512 (ONEDNN_MAX_CPU_ISA not capping it), no GPU."""
    return column_pairs.pairs_pay_here(host.cpu_flags(), _pywrap_util_port.IsMklEnabled(),
                                       bool(tf.config.list_physical_devices('GPU')),
                                       os.environ.get('ONEDNN_MAX_CPU_ISA'))


def dilated_conv_by_taps(inputs, weights, rate, data_format):
    """A stride-1, SAME-padded dilated convolution as one 1x1 convolution per kernel tap, without the padding.

    With k = kernel size and p = rate * (k - 1) // 2 (SAME's padding before each spatial axis),
        y[i, j] = sum_{u, v} x[i + u*rate - p, j + v*rate - p] . w[u, v]    (x = 0 outside the map),
    so tap (u, v) adds x shifted by (u*rate - p, v*rate - p) times w[u, v] to the outputs whose shifted
    position lies inside the map. Each tap convolves only that window of x (a tap that falls wholly in the
    padding is skipped) and is padded back to the map's size. For SSD300's conv6 (19x19, rate 6) that is
    2025 of the 9 x 361 (tap, pixel) products of the padded convolution. Ops: StridedSlice, Conv2D 1x1,
    Pad, AddN, which every TensorFlow build (and TFLite) runs.

    inputs: [B, H, W, C] (NHWC) or [B, C, H, W] (NCHW), H and W known; weights: [k, k, C, C_out].
    """
    spatial = (1, 2) if data_format == 'NHWC' else (2, 3)
    height, width = (inputs.shape.as_list()[axis] for axis in spatial)
    if height is None or width is None:
        raise ValueError(f'dilated_conv_by_taps needs a known height and width, got {inputs.shape}')
    kernel_size = weights.shape.as_list()[0]
    before = rate * (kernel_size - 1) // 2
    products = []
    for u in range(kernel_size):
        for v in range(kernel_size):
            shift_y, shift_x = u * rate - before, v * rate - before
            # Output rows [top, bottom) and columns [left, right) read rows / columns shifted inside the map.
            top, bottom = max(0, -shift_y), min(height, height - shift_y)
            left, right = max(0, -shift_x), min(width, width - shift_x)
            if top >= bottom or left >= right:
                continue
            window = [slice(None)] * 4
            window[spatial[0]] = slice(top + shift_y, bottom + shift_y)
            window[spatial[1]] = slice(left + shift_x, right + shift_x)
            product = tf.nn.conv2d(inputs[tuple(window)], weights[u:u + 1, v:v + 1], 1, 'VALID',
                                   data_format=data_format)
            paddings = [[0, 0]] * 4
            paddings[spatial[0]] = [top, height - bottom]
            paddings[spatial[1]] = [left, width - right]
            products.append(tf.pad(product, paddings))
    return tf.add_n(products)


def dilated_conv2d(inputs, num_outputs, kernel_size, rate, native, scope):
    """slim.conv2d(inputs, num_outputs, [k, k], rate=rate, scope=scope) with the same variables
    (<scope>/weights [k, k, c_in, num_outputs], <scope>/biases) and the current conv2d arg_scope's
    initializers, regulariser, activation, padding and data format.

    native: one Conv2D with dilations (oneDNN / cuDNN run it directly; oneDNN skips the taps that fall in
    the zero padding). Otherwise dilated_conv_by_taps, which every kernel runs, with padding 'SAME'.
    (TensorFlow's own form, space_to_batch, pads SSD300's conv6 (19x19, rate 6) to 24x24 and computes 1.6x
    the FLOPs in 36 tiny 4x4 convs: 2.5-6x slower than either, bench/RESULTS.md.)
    """
    args = _conv2d_arg_scope()
    data_format = args.get('data_format', 'NHWC')
    with tf.variable_scope(scope, values=[inputs]):
        weights, biases = _conv_variables(inputs, num_outputs, kernel_size, args)
        padding = args.get('padding', 'SAME')
        if native:
            dilations = [1, rate, rate, 1] if data_format == 'NHWC' else [1, 1, rate, rate]
            net = tf.nn.conv2d(inputs, weights, 1, padding, data_format=data_format, dilations=dilations)
        elif padding == 'SAME':
            net = dilated_conv_by_taps(inputs, weights, rate, data_format)
        else:
            raise ValueError(f'{scope}: the dilated convolution by taps takes padding SAME, got {padding}')
        net = tf.nn.bias_add(net, biases, data_format=data_format)
        activation_fn = args.get('activation_fn', tf.nn.relu)
        return activation_fn(net) if activation_fn else net


def _conv2d_arg_scope():
    """The keyword arguments the current arg_scope gives slim.conv2d."""
    return slim.current_arg_scope().get(slim.arg_scope_func_key(slim.conv2d), {})


def _conv_variables(inputs, num_outputs, kernel_size, args):
    """slim.conv2d's variables in the current variable scope, with the arg_scope's initializers and regulariser:
    weights [k, k, c_in, num_outputs] and biases [num_outputs]."""
    channels_in = inputs.shape.as_list()[channel_axis(args.get('data_format', 'NHWC'))]
    weights = slim.model_variable('weights', shape=[kernel_size, kernel_size, channels_in, num_outputs],
                                  initializer=args.get('weights_initializer', slim.xavier_initializer()),
                                  regularizer=args.get('weights_regularizer'))
    biases = slim.model_variable('biases', shape=[num_outputs],
                                 initializer=args.get('biases_initializer', tf.zeros_initializer()))
    return weights, biases


def trunk_conv2d(inputs, num_outputs, paired_columns, scope):
    """slim.conv2d(inputs, num_outputs, [3, 3], scope=scope) under the current arg_scope (ssd_arg_scope's
    arguments); with paired_columns, a layer narrow enough for nets/column_pairs.py runs there, with the same
    variables and function. An arg_scope with other padding, strides, dilation or a normaliser keeps slim's."""
    args = _conv2d_arg_scope()
    plain = (args.get('padding', 'SAME') == 'SAME' and args.get('stride', 1) == 1 and args.get('rate', 1) == 1
             and not args.get('normalizer_fn'))
    if not (paired_columns and plain and column_pairs.is_pairable(
            inputs.shape.as_list(), num_outputs, args.get('data_format', 'NHWC'))):
        return slim.conv2d(inputs, num_outputs, [3, 3], scope=scope)
    with tf.variable_scope(scope, values=[inputs]):
        weights, biases = _conv_variables(inputs, num_outputs, 3, args)
        return column_pairs.conv2d(inputs, weights, biases, args.get('activation_fn', tf.nn.relu))


def vgg_trunk(inputs, depth, end_points, native_dilation, paired_columns=False):
    """VGG-16 conv1..conv5 + SSD's pool5 (3x3, stride 1), conv6 (3x3, dilation 6) and conv7 (1x1).

    `depth(c)` gives a layer's channels; end_points gets 'block1'..'block7'. Needs an arg_scope that
    sets padding='SAME' and the data format for conv2d / max_pool2d. native_dilation: see dilated_conv2d;
    paired_columns: see trunk_conv2d. Scopes as slim.repeat names them (conv1/conv1_1, ...).
    """
    net = inputs
    for index, (repeats, channels) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), 1):
        block = 'conv%d' % index
        with tf.variable_scope(block, values=[net]):
            for repeat in range(1, repeats + 1):
                net = trunk_conv2d(net, depth(channels), paired_columns, scope='%s_%d' % (block, repeat))
        end_points['block%d' % index] = net
        if index < 5:
            net = slim.max_pool2d(net, [2, 2], scope='pool%d' % index)
    net = slim.max_pool2d(net, [3, 3], stride=1, scope='pool5')
    net = dilated_conv2d(net, depth(1024), 3, 6, native_dilation, scope='conv6')
    end_points['block6'] = net
    net = slim.conv2d(net, depth(1024), [1, 1], scope='conv7')
    end_points['block7'] = net
    return net


def extra_block(net, spec, depth, data_format):
    """One SSD extra block: conv1x1 (spec.mid channels), zero-pad spec.pad, convKxK VALID (spec.out).

    spec = ExtraBlock(name, mid, out, kernel, stride, pad); Caffe's pad/stride reproduced exactly
    (SAME padding would pad asymmetrically for even sizes and shift the feature maps).
    """
    with tf.variable_scope(spec.name, values=[net]):
        net = slim.conv2d(net, depth(spec.mid), [1, 1], scope='conv1x1')
        if spec.pad:
            net = pad_spatial(net, spec.pad, data_format)
        return slim.conv2d(net, depth(spec.out), [spec.kernel, spec.kernel], stride=spec.stride,
                           padding='VALID', scope='conv%dx%d' % (spec.kernel, spec.kernel))


def flatten_cells(net_nhwc, depth):
    """[B, H, W, A*depth] -> [B, H*W*A, depth], anchor order y, x, a (channel = a * depth + j)."""
    height, width, channels = net_nhwc.shape.as_list()[1:]
    if height is not None and width is not None:
        return tf.reshape(net_nhwc, [-1, height * width * channels // depth, depth])
    return tf.reshape(net_nhwc, [tf.shape(net_nhwc)[0], -1, depth])


def _loc_in_project_order(values):
    """conv_loc's weights [..., A*4] or biases [A*4] with each anchor's four in CHECKPOINT_TO_PROJECT_LOC_ORDER:
    a product with a permutation matrix over the last axis (a gather there copies element by element, and on
    axis 0 its gradient would be IndexedSlices)."""
    shape = values.shape.as_list()
    order = [4 * anchor + j for anchor in range(shape[-1] // 4) for j in CHECKPOINT_TO_PROJECT_LOC_ORDER]
    permutation = np.eye(shape[-1], dtype=values.dtype.base_dtype.as_numpy_dtype)[:, order]   # column k: e_order[k]
    return tf.reshape(tf.matmul(tf.reshape(values, [-1, shape[-1]]), permutation), shape)


def box_head(net, num_classes, num_anchors, normalization, data_format):
    """Class logits [B, H*W*A, num_classes] and offsets [B, H*W*A, 4] (ty, tx, th, tw) of one layer.

    conv_cls / conv_loc are 3x3 convs with A*num_classes / A*4 outputs, no activation. conv_loc runs with its
    filters' and biases' columns permuted to the project's order: the same outputs as reordering its [B, N, 4]
    output, for a product over the small filter instead of a gather over every anchor, forward and backward.
    """
    if normalization > 0:
        net = l2_normalization(net, normalization, data_format)
    with tf.variable_scope('conv_loc', values=[net]):
        weights, biases = _conv_variables(net, num_anchors * 4, 3, _conv2d_arg_scope())
        loc = tf.nn.bias_add(tf.nn.conv2d(net, _loc_in_project_order(weights), 1, 'SAME', data_format=data_format),
                             _loc_in_project_order(biases), data_format=data_format)
    cls = slim.conv2d(net, num_anchors * num_classes, [3, 3], activation_fn=None, scope='conv_cls')
    if data_format == 'NCHW':
        loc = tf.transpose(loc, [0, 2, 3, 1])
        cls = tf.transpose(cls, [0, 2, 3, 1])
    return flatten_cells(cls, num_classes), flatten_cells(loc, 4)


def ssd_arg_scope(weight_decay, data_format):
    """tf-slim arg_scope of the SSD nets: ReLU, Xavier weights, zero biases, L2 decay on weights.

    The decay term slim adds per weight tensor is weight_decay * sum(w^2) / 2 (tf.nn.l2_loss).
    """
    with slim.arg_scope([slim.conv2d],
                        activation_fn=tf.nn.relu,
                        # None, not l2_regularizer(0), which logs 'Scale of 0 disables regularizer'
                        weights_regularizer=slim.l2_regularizer(weight_decay) if weight_decay else None,
                        weights_initializer=slim.xavier_initializer(),
                        biases_initializer=tf.zeros_initializer()):
        with slim.arg_scope([slim.conv2d, slim.max_pool2d], padding='SAME', data_format=data_format) as scope:
            return scope
