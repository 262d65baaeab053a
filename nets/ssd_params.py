"""The one structure that describes an SSD network's feature layers and anchors.

Sizes and steps are in pixels of the network input (img_shape); anchors.py turns them into normalised
boxes. `anchor_sizes[k] = (s_k, s_k+1)`: a cell of layer k holds a square anchor of side s_k, a square of
side sqrt(s_k * s_k+1), then one anchor per ratio r with h = s_k / sqrt(r), w = s_k * sqrt(r).
"""
import collections

SSDParams = collections.namedtuple('SSDParams', [
    'img_shape',        # (height, width) of the network input, pixels.
    'num_classes',      # background + K classes.
    'feat_layers',      # names of the end points that carry box heads, e.g. 'block4'.
    'feat_shapes',      # (H, W) of each feature layer for img_shape.
    'anchor_sizes',     # per layer (s_k, s_k+1), pixels.
    'anchor_ratios',    # per layer, aspect ratios r = w / h beyond the two squares.
    'anchor_steps',     # per layer, pixels between neighbouring cell centres.
    'anchor_offset',    # cell centre offset in units of a step (0.5 = middle of the cell).
    'normalizations',   # per layer, initial L2Normalization scale (gamma), or -1 for none.
    'prior_scaling',    # variances of the (ty, tx, th, tw) encoding.
])

PRIOR_SCALING = (0.1, 0.1, 0.2, 0.2)
ANCHOR_SETS = ('ssd_tensorflow', 'caffe')
MIN_CHANNELS = 8


def anchor_size_pairs(sizes):
    """(s_0, ..., s_L) -> ((s_0, s_1), ..., (s_L-1, s_L)): the per-layer (s_k, s_k+1) pairs."""
    return tuple((float(a), float(b)) for a, b in zip(sizes[:-1], sizes[1:]))


def anchor_sizes_problem(sizes, count):
    """Why (s_0..s_L) cannot be a network's per-layer anchor sizes (count of them, in pixels), or None."""
    if len(sizes) != count:
        return f'takes {count} sizes (one more than its {count - 1} feature layers), got {len(sizes)}'
    if not all(0 < s < float('inf') for s in sizes):
        return 'sizes must be positive numbers of pixels'
    if any(b < a for a, b in zip(sizes[:-1], sizes[1:])):
        return 'sizes must not decrease from one feature layer to the next'
    return None


def num_anchors_per_cell(params):
    """A per feature layer = 2 squares + one anchor per ratio."""
    return [2 + len(ratios) for ratios in params.anchor_ratios]


def scaled_channels(channels, depth_multiplier):
    """Output channels of a conv at `depth_multiplier`: int(round(channels * dm)), at least MIN_CHANNELS."""
    return max(MIN_CHANNELS, int(round(channels * depth_multiplier)))
