"""Conv2D's gradients with the weight gradient of wide NHWC layers computed in NCHW.

For a convolution out[n, y, x, k] = sum_{i, j, c} in[n, y*s + i*d - p, x*s + j*d - p, c] * w[i, j, c, k], the
weight gradient is dL/dw[i, j, c, k] = sum_{n, y, x} in[n, y*s + i*d - p, x*s + j*d - p, c] * g[n, y, x, k]
(g = dL/dout): the same sum whatever order the tensors are stored in. On CPUs without AVX-512, oneDNN's NHWC
kernel for it runs at a quarter to a half of its forward kernel's speed, while its NCHW kernel runs about twice
as fast as the NHWC one on SSD300's wide layers, transposes included (bench/RESULTS.md, issue 9). So, under
`override()`, a Conv2D's weight gradient transposes the layer's input and output gradient to NCHW and computes
there when the layer is wide (both channel counts >= MIN_CHANNELS, >= MIN_MACS multiply-adds per image, no
dilation); the input gradient, and every other layer's gradients, are TensorFlow's own.

That kernel unrolls each image into an im2col buffer of kh*kw*C_in floats per output pixel, which it allocates
itself, outside TensorFlow's allocator: 198 MiB for conv1_2 at depth 1.0, alive at the end of the backward pass
where training's memory peaks. A layer whose buffer would exceed MAX_IM2COL_FLOATS is taken one image and one band
of output rows at a time, each band's input rows (with the halo the kernel needs) zero-padded explicitly:
dL/dw is a sum over (n, y, x), so the bands' sums add up to it.
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
# The most floats of oneDNN's im2col buffer in one call: conv1_2 (52 M per image at depth 1.0) goes in 4 bands of
# 75 rows and conv2_2 in 2, 49 MiB each; training's peak RSS fell by 0.15 GiB at the same speed (bench/RESULTS.md).
MAX_IM2COL_FLOATS = 16 * 2 ** 20
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


def row_bands(height_out, im2col_floats_per_row):
    """Consecutive (first, end) output rows, of near-equal heights, whose im2col buffers hold at most
    MAX_IM2COL_FLOATS floats each (one row at least)."""
    count = min(height_out, max(1, -(-height_out * im2col_floats_per_row // MAX_IM2COL_FLOATS)))
    edges = [round(band * height_out / count) for band in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _pads(padding, explicit_paddings, size_in, size_out, kernel, stride, dimension):
    """(before, after) zero rows (dimension 1) or columns (2) the layer adds to its NHWC input."""
    if padding == 'EXPLICIT':
        return tuple(explicit_paddings[2 * dimension:2 * dimension + 2])
    if padding == 'VALID':
        return 0, 0
    total = max((size_out - 1) * stride + kernel - size_in, 0)   # SAME: the extra one goes after
    return total // 2, total - total // 2


def _weight_gradient_pieces(inputs, grad, kernel_size, padding, attrs):
    """(NHWC input, NHWC output gradient, padding, explicit paddings) of each call that sums to the weight gradient:
    chunks of images (image_chunks), or, where an image's im2col buffer would exceed MAX_IM2COL_FLOATS, single images
    in row bands (row_bands), each band's input rows sliced with their halo and padded here (VALID). A generator:
    each piece's ops are made in the caller's control-dependency context."""
    batch, height_in, width_in, channels_in = inputs.shape.as_list()
    _, height_out, width_out, channels_out = grad.shape.as_list()
    kernel_h, kernel_w = kernel_size
    _, stride_h, stride_w, _ = attrs['strides']
    bands = row_bands(height_out, kernel_h * kernel_w * channels_in * width_out)
    if batch is None or len(bands) == 1:
        floats_per_image = max(inputs.shape[1:].num_elements() or 0, grad.shape[1:].num_elements() or 0)
        sizes = image_chunks(batch, floats_per_image)
        start = 0
        for size in sizes:
            images = slice(start, start + size) if len(sizes) > 1 else slice(None)
            yield inputs[images], grad[images], padding, attrs['explicit_paddings']
            start += size or 0
        return
    top, _ = _pads(padding, attrs['explicit_paddings'], height_in, height_out, kernel_h, stride_h, 1)
    left, right = _pads(padding, attrs['explicit_paddings'], width_in, width_out, kernel_w, stride_w, 2)
    # Rows of all images stacked: a run of one image's rows is then a slice of dimension 0, which TensorFlow
    # takes without copying.
    input_rows = tf.reshape(inputs, [batch * height_in, width_in, channels_in])
    grad_rows = tf.reshape(grad, [batch * height_out, width_out, channels_out])
    for image in range(batch):
        for first, end in bands:
            wanted_first, wanted_end = first * stride_h - top, (end - 1) * stride_h + kernel_h - top
            row_first, row_end = max(wanted_first, 0), min(wanted_end, height_in)
            band_input = tf.expand_dims(input_rows[image * height_in + row_first:image * height_in + row_end], 0)
            band_input = tf.pad(band_input, [[0, 0], [row_first - wanted_first, wanted_end - row_end], [left, right],
                                             [0, 0]])
            band_grad = tf.expand_dims(grad_rows[image * height_out + first:image * height_out + end], 0)
            yield band_input, band_grad, 'VALID', []


def _weight_gradient_in_nchw(inputs, grad, filter_shape, padding, attrs):
    """Conv2DBackpropFilter in NCHW of NHWC inputs and output gradient: the sum over _weight_gradient_pieces, one
    piece after the other. Each piece is made and transposed only once the previous one is done and the output
    gradient exists: otherwise TensorFlow may run the transposes early (the inputs' in the forward pass) and hold
    every wide layer's NCHW copies at once."""
    pieces = _weight_gradient_pieces(inputs, grad, filter_shape[:2], padding, attrs)
    filter_sizes = tf.constant(filter_shape, tf.int32)
    total, previous = None, grad
    while True:
        with tf.control_dependencies([previous]):
            piece = next(pieces, None)
            if piece is None:
                return total
            piece_input, piece_grad, piece_padding, explicit_paddings = piece
            previous = tf.raw_ops.Conv2DBackpropFilter(
                input=tf.transpose(piece_input, _NHWC_TO_NCHW), filter_sizes=filter_sizes,
                out_backprop=tf.transpose(piece_grad, _NHWC_TO_NCHW), padding=piece_padding, data_format='NCHW',
                strides=_to_nchw(attrs['strides']), dilations=_to_nchw(attrs['dilations']),
                explicit_paddings=_to_nchw(explicit_paddings))
        total = previous if total is None else total + previous


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
        filter_grad = _weight_gradient_in_nchw(inputs, grad, filters.shape.as_list(), padding, attrs)
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
