"""Conv2D's gradients with the weight gradient of wide NHWC layers computed in NCHW.

For a convolution out[n, y, x, k] = sum_{i, j, c} in[n, y*s + i*d - p, x*s + j*d - p, c] * w[i, j, c, k], the
weight gradient is dL/dw[i, j, c, k] = sum_{n, y, x} in[n, y*s + i*d - p, x*s + j*d - p, c] * g[n, y, x, k]
(g = dL/dout): the same sum whatever order the tensors are stored in. On CPUs without AVX-512, oneDNN's NHWC
kernel for it runs at a quarter to a half of its forward kernel's speed, while its NCHW kernel runs about twice
as fast as the NHWC one on SSD300's wide layers, transposes included (bench/RESULTS.md, issue 9). So, under
`override()`, a Conv2D's weight gradient transposes the layer's input and output gradient to NCHW and computes
there when the layer is wide (both channel counts >= MIN_CHANNELS, >= MIN_MACS multiply-adds per image, no
dilation); the input gradient, and every other layer's gradients, are TensorFlow's own.
"""
import contextlib

import tensorflow.compat.v1 as tf

GRADIENT_NAME = 'SSDConv2DWideWeightGradInNCHW'
# Where the NCHW weight gradient won in the per-layer measurement: SSD300's layers of >= 64 channels and
# >= 0.1 G multiply-adds per image, conv1_2 to conv7 at depth 1.0 (1.1-2.9x); narrower or smaller ones (depth
# 0.125's, the last extra layers, the box heads) lost or tied (0.2-1.0x).
MIN_CHANNELS = 64
MIN_MACS = 1e8
# The most floats of a layer's input (or output gradient) transposed at once: conv1_2's at batch 8 (46 M) goes in
# chunks of images, so that training's peak memory stays near that of TensorFlow's own gradients.
MAX_CHUNK_FLOATS = 16 * 2 ** 20
_NHWC_TO_NCHW = (0, 3, 1, 2)


def is_wide(filter_shape, output_shape, dilations):
    """Whether a NHWC layer's weight gradient goes through NCHW: static filter [kh, kw, C_in, C_out] and output
    [N, H_out, W_out, C_out] shapes (lists, None where unknown) and the op's dilations."""
    kernel_h, kernel_w, channels_in, channels_out = filter_shape
    _, height, width, _ = output_shape
    if None in (kernel_h, kernel_w, channels_in, channels_out, height, width) or any(d != 1 for d in dilations):
        return False
    macs_per_image = kernel_h * kernel_w * channels_in * channels_out * height * width
    return min(channels_in, channels_out) >= MIN_CHANNELS and macs_per_image >= MIN_MACS


def goes_through_nchw(op):
    """Whether override() computes this Conv2D op's weight gradient in NCHW: a wide NHWC layer (is_wide)."""
    return (op.get_attr('data_format') == b'NHWC'
            and is_wide(op.inputs[1].shape.as_list(), op.outputs[0].shape.as_list(), op.get_attr('dilations')))


def wide_layers(graph):
    """Names (the op's scope) of the graph's Conv2D layers whose weight gradients override() computes in NCHW."""
    return [op.name.rsplit('/', 1)[0] for op in graph.get_operations()
            if op.type == 'Conv2D' and goes_through_nchw(op)]


def _to_nchw(values):
    """A per-dimension NHWC attribute in NCHW order: strides and dilations (4 values), explicit paddings (a
    pair per dimension, or none)."""
    if len(values) == 8:
        return [v for d in _NHWC_TO_NCHW for v in values[2 * d:2 * d + 2]]
    return [values[d] for d in _NHWC_TO_NCHW] if values else []


def image_chunks(batch, floats_per_image):
    """Sizes of consecutive chunks of a batch of `batch` images (None: unknown, one chunk) whose NCHW copies hold
    at most MAX_CHUNK_FLOATS floats each (one image at least)."""
    per_chunk = max(1, MAX_CHUNK_FLOATS // floats_per_image)
    if batch is None or batch <= per_chunk:
        return [batch]
    return [min(per_chunk, batch - start) for start in range(0, batch, per_chunk)]


def _weight_gradient_in_nchw(inputs, grad, filter_sizes, padding, attrs):
    """Conv2DBackpropFilter in NCHW of NHWC inputs and output gradient: the sum over chunks of images, one chunk
    after the other. Each chunk is transposed only once the previous one is done and the output gradient exists:
    otherwise TensorFlow may run the transposes early (the inputs' in the forward pass) and hold every wide
    layer's NCHW copies at once."""
    floats_per_image = max(inputs.shape[1:].num_elements() or 0, grad.shape[1:].num_elements() or 0)
    sizes = image_chunks(inputs.shape.as_list()[0], floats_per_image)
    nchw_attrs = {name: _to_nchw(values) for name, values in attrs.items()}
    total, previous, start = None, grad, 0
    for size in sizes:
        rows = slice(start, start + size) if len(sizes) > 1 else slice(None)
        with tf.control_dependencies([previous]):
            inputs_nchw = tf.transpose(inputs[rows], _NHWC_TO_NCHW)
            grad_nchw = tf.transpose(grad[rows], _NHWC_TO_NCHW)
        previous = tf.raw_ops.Conv2DBackpropFilter(input=inputs_nchw, filter_sizes=filter_sizes,
                                                   out_backprop=grad_nchw, padding=padding, data_format='NCHW',
                                                   **nchw_attrs)
        total = previous if total is None else total + previous
        start += size if len(sizes) > 1 else 0
    return total


@tf.RegisterGradient(GRADIENT_NAME)
def _conv2d_gradients(op, grad):
    """(dL/dinput, dL/dfilter) of a Conv2D op, as TensorFlow's own gradient but for wide NHWC layers."""
    inputs, filters = op.inputs
    attrs = {name: op.get_attr(name) for name in ('strides', 'explicit_paddings', 'dilations')}
    padding = op.get_attr('padding').decode()
    data_format = op.get_attr('data_format').decode()
    input_grad = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(inputs), filter=filters, out_backprop=grad, padding=padding, data_format=data_format,
        **attrs)
    if goes_through_nchw(op):
        filter_grad = _weight_gradient_in_nchw(inputs, grad, tf.shape(filters), padding, attrs)
    else:
        filter_grad = tf.raw_ops.Conv2DBackpropFilter(
            input=inputs, filter_sizes=tf.shape(filters), out_backprop=grad, padding=padding,
            data_format=data_format, **attrs)
    return input_grad, filter_grad


def override(enabled=True):
    """Context: the Conv2D ops created in it get these gradients (a no-op context when not enabled)."""
    if not enabled:
        return contextlib.nullcontext()
    return tf.get_default_graph().gradient_override_map({'Conv2D': GRADIENT_NAME})
