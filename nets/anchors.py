"""SSD default boxes (anchors), computed once in numpy.

Output boxes are (cy, cx, h, w), normalised by the input height / width. Order = layer-major, then
row y, column x, then anchor index a within the cell -- the order of SSD-Tensorflow and of the Caffe
release, which the published checkpoints' box heads follow.

For layer k with step t_k (pixels), offset o and input size (H_img, W_img):
    cy = (y + o) * t_k / H_img,   cx = (x + o) * t_k / W_img
and the cell's anchors, in this order (sizes in pixels, see ssd_params):
    a=0: h = s_k / H_img,                 w = s_k / W_img
    a=1: h = sqrt(s_k * s_k+1) / H_img,   w = sqrt(s_k * s_k+1) / W_img
    a=2..: for each ratio r: h = s_k / sqrt(r) / H_img,  w = s_k * sqrt(r) / W_img
"""
import numpy as np


def cell_anchor_sizes(img_shape, sizes, ratios):
    """Heights and widths [A] (normalised) of the anchors of one cell, in anchor order."""
    img_h, img_w = float(img_shape[0]), float(img_shape[1])
    small, large = sizes
    side_px = [small, np.sqrt(small * large)]
    heights = [s / img_h for s in side_px] + [small / np.sqrt(r) / img_h for r in ratios]
    widths = [s / img_w for s in side_px] + [small * np.sqrt(r) / img_w for r in ratios]
    return np.array(heights, np.float64), np.array(widths, np.float64)


def layer_anchors(img_shape, feat_shape, sizes, ratios, step, offset):
    """Anchors of one feature layer: [H*W*A, 4] float32 (cy, cx, h, w), order y, x, a."""
    feat_h, feat_w = feat_shape
    heights, widths = cell_anchor_sizes(img_shape, sizes, ratios)
    num_cell = len(heights)
    cy = (np.arange(feat_h, dtype=np.float64) + offset) * step / img_shape[0]
    cx = (np.arange(feat_w, dtype=np.float64) + offset) * step / img_shape[1]
    grid = np.zeros((feat_h, feat_w, num_cell, 4), np.float64)
    grid[..., 0] = cy[:, None, None]
    grid[..., 1] = cx[None, :, None]
    grid[..., 2] = heights[None, None, :]
    grid[..., 3] = widths[None, None, :]
    return grid.reshape(-1, 4).astype(np.float32)


def ssd_anchors_per_layer(params):
    """List, one entry per feature layer, of [H*W*A, 4] float32 anchors (cy, cx, h, w)."""
    return [layer_anchors(params.img_shape, feat_shape, sizes, ratios, step, params.anchor_offset)
            for feat_shape, sizes, ratios, step in zip(params.feat_shapes, params.anchor_sizes,
                                                        params.anchor_ratios, params.anchor_steps)]


def ssd_anchors(params):
    """All anchors [N, 4] float32 (cy, cx, h, w), layers concatenated in feature-layer order."""
    return np.concatenate(ssd_anchors_per_layer(params), axis=0)
