"""A narrow 3x3 convolution computed on pairs of adjacent columns, so that its channels fill a vector.

oneDNN vectorises a NHWC convolution over channels. A layer with 8 output channels (conv1_1 and conv1_2 at
depth 0.125) fills half of an AVX-512 register (16 floats) and runs at about half the per-core rate. In NHWC
a pixel's channels and its right neighbour's are adjacent in memory, so [B, H, W, C] is, at no cost,
[B, H, W/2, 2C]: one "pixel" per pair of columns. The same convolution on that view has 2C inputs and 2D
outputs and fills the register; it does 4/3 of the direct convolution's multiply-adds (below) and, on one
AVX-512 core as training's towers run it, takes 0.75-0.8x the time forward and forward + backward
(bench/RESULTS.md). A forward pass over both cores gained nothing, so inference keeps the direct form.

The math, for a stride-1 SAME 3x3 convolution y = x * K (K [3, 3, C, D]; along a row,
y[w] = sum_{d=0..2} x[w + d - 1] K[., d], x = 0 outside the row). Pad x by one zero column on each side,
x'[k] = x[k - 1], and pair its columns: P_j = (x'[2j], x'[2j + 1]) = (x[2j - 1], x[2j]), j = 0..W/2.
Output pair j, (y[2j], y[2j + 1]), reads x[2j - 1 .. 2j + 2] = P_j and P_{j+1}:

    y[2j + t] = sum_{p, s in {0, 1}} P_{j+p}[s] K[., 2p + s - t]     (t in {0, 1}; K[., d] = 0 unless 0 <= d <= 2)

a VALID convolution over the pairs with a [3, 2, 2C, 2D] filter K'[., p, sC + c, tD + e] = K[., 2p + s - t, c, e];
6 of its 8 (p, s, t) blocks are taps of K, 2 are zero (hence 4/3). Rows are padded by one on each side and
convolved VALID, as SAME would. The variables stay K and the bias, so checkpoints do not change.
"""
import numpy as np
import tensorflow.compat.v1 as tf

# Layers with at most this many output channels are paired: 8 floats are half an AVX-512 vector.
NARROW_CHANNELS = 8
SCOPE = 'column_pairs'   # name scope, inside the layer's own, of the ops that pair the input and the filter
USEFUL_FRACTION = 0.75   # of a paired convolution's multiply-adds: 6 of the filter's 8 (p, s, t) blocks
# ONEDNN_MAX_CPU_ISA values that cap oneDNN below AVX-512 (DEFAULT, ALL, AVX512_* and AVX10_* do not).
_NARROWER_ISAS = ('SSE41', 'AVX', 'AVX2')


def pairs_pay_here(cpu_flags, onednn_on, gpu_present, max_cpu_isa=None):
    """Whether this process pairs narrow layers in training: oneDNN runs the convolutions (no GPU) with 16-float
    vectors (AVX-512, not capped by ONEDNN_MAX_CPU_ISA). With AVX2's 8-float vectors an 8-channel layer already
    fills one, and the pairs' extra third of multiply-adds would be a loss."""
    capped = bool(max_cpu_isa) and max_cpu_isa.upper().split('_')[0] in _NARROWER_ISAS
    return onednn_on and not gpu_present and 'avx512f' in cpu_flags and not capped


def is_pairable(input_shape, num_outputs, data_format):
    """Whether column pairs can compute this 3x3 stride-1 SAME convolution: NHWC, a known height and a known,
    even width, and at most NARROW_CHANNELS outputs."""
    height, width = input_shape[1:3]
    return (data_format == 'NHWC' and num_outputs <= NARROW_CHANNELS
            and height is not None and width is not None and width % 2 == 0)


def paired_filter(weights):
    """[3, 3, C, D] filter -> the [3, 2, 2C, 2D] filter of the same convolution on column pairs (see above)."""
    rows, _, channels_in, channels_out = weights.shape.as_list()
    zero_tap = tf.zeros([rows, 1, channels_in, channels_out], weights.dtype)
    taps = tf.concat([zero_tap, weights, zero_tap], axis=1)        # tap d of K is taps[:, d + 1]
    tap_of = np.array([[[2 * p + s - t + 1 for t in (0, 1)] for s in (0, 1)] for p in (0, 1)])   # [p, s, t]
    blocks = tf.gather(taps, tap_of.reshape(-1), axis=1)           # [3, (p, s, t), C, D]
    blocks = tf.reshape(blocks, [rows, 2, 2, 2, channels_in, channels_out])
    blocks = tf.transpose(blocks, [0, 1, 2, 4, 3, 5])              # [3, p, s, C, t, D]
    return tf.reshape(blocks, [rows, 2, 2 * channels_in, 2 * channels_out])


def conv2d(inputs, weights, biases, activation_fn):
    """activation_fn(SAME 3x3 stride-1 convolution of inputs [B, H, W, C] by weights [3, 3, C, D] + biases [D]),
    computed on column pairs; [B, H, W, D], equal to the direct form up to float summation order. The
    convolution op sits in the caller's scope, its paired input and filter under SCOPE."""
    height, width, channels_in = inputs.shape.as_list()[1:]
    channels_out = weights.shape.as_list()[-1]
    with tf.name_scope(SCOPE):
        padded = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
        pairs = tf.reshape(padded, [-1, height + 2, width // 2 + 1, 2 * channels_in])
        pair_weights = paired_filter(weights)
        pair_biases = tf.tile(biases, [2])
    net = tf.nn.conv2d(pairs, pair_weights, strides=1, padding='VALID')
    # Bias and activation on the pairs' layout, so that oneDNN fuses them into the convolution.
    net = tf.nn.bias_add(net, pair_biases)
    if activation_fn:
        net = activation_fn(net)
    return tf.reshape(net, [-1, height, width, channels_out], name='unpaired')


def is_paired(conv_op):
    """Whether a Conv2D op is conv2d's convolution on column pairs (its input comes from under SCOPE)."""
    return conv_op.type == 'Conv2D' and conv_op.inputs[0].op.name.rsplit('/', 1)[0].endswith('/' + SCOPE)


def paired_layers(graph):
    """Scopes of the graph's layers that conv2d computes on column pairs."""
    return [op.name.rsplit('/', 1)[0] for op in graph.get_operations() if is_paired(op)]
