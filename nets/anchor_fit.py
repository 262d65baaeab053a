"""How well a network's anchors fit a dataset's boxes, and anchor sizes fitted to the boxes.

A ground-truth box g trains well only through anchors a with IoU(g, a) >= the match threshold (its one
forced best match aside, box_coder.match). best_iou(g) = max_a IoU(g, a); the best possible recall is
    BPR = |{g : best_iou(g) >= threshold}| / |{g}|
(YOLOv5's "autoanchor" name for it). Boxes are normalised yxyx, as in the records; anchors are those of
anchors.py (unclipped, as matching sees them), so the network input's aspect ratio is accounted for.

Nearest cell: the anchors of one shape (layer k, anchor index a) lie on a grid of step t_k. The IoU of two
axis-aligned boxes of fixed sizes is I / (|g| + |a| - I) with I = overlap_y * overlap_x, and each overlap
falls as the centres move apart along its axis; so the best anchor of a shape is the one in the cell whose
centre is nearest g's centre along y and along x. best_iou then costs sum_k A_k IoUs per box (30 for
SSD300) instead of one per anchor (8732).

Fitted sizes (fit_anchor_sizes): the per-layer sizes (s_0..s_L) are chosen to maximise
    fitness = BPR + IOU_WEIGHT * mean_g best_iou(g)
(BPR first; among equal BPRs, the closer fit) over the boxes as evaluation sees them plus, when a zoom sampler
is given, one copy of each as training's augmentation shows it (sides scaled by a sampled zoom-out and crop,
at a random place): anchors fitted to the first alone leave the enlarged and shrunken training boxes without
a match (bench/RESULTS.md, "Anchor fit"). The search is coordinate descent in log size: each s_j in turn tries a
geometric grid between its neighbours s_j-1 and s_j+1 (sizes stay ordered, so coarse layers keep the large
anchors), and a move is kept only when it raises the fitness by more than MIN_GAIN. The ratios, steps and
anchors per cell stay as they are, so every variable keeps its shape. Two starts: the network's built-in
sizes and quantiles of the box sides; the better result wins, the built-in start on a tie, so data that
the built-in sizes already fit keep sizes close to them.
"""
import dataclasses

import numpy as np

from nets.anchors import cell_anchor_sizes
from nets.ssd_params import anchor_size_pairs

IOU_WEIGHT = 0.1
MIN_GAIN = 1e-3
BPR_WARNING = 0.9          # below it, the start-up report warns and names what would help
SIDE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_FIT_BOXES = 8000
_GRID_POINTS = 24
_MAX_SWEEPS = 6
_MIN_SIZE_PX = 2.0


def _centres_and_sizes(boxes):
    """yxyx [M, 4] -> (cy, cx, h, w), each [M] float64."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ymin, xmin, ymax, xmax = boxes.T
    return (ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin


def _nearest_centre(centre, num_cells, step, offset):
    """Centre of the nearest of num_cells grid cells ((i + offset) * step, all normalised) to each centre."""
    index = np.clip(np.round(centre / step - offset), 0, num_cells - 1)
    return (index + offset) * step


def _overlap(centre_a, side_a, centre_b, side_b):
    """1-D overlap of the segments [c - s/2, c + s/2] (broadcast)."""
    low = np.maximum(centre_a - side_a / 2, centre_b - side_b / 2)
    high = np.minimum(centre_a + side_a / 2, centre_b + side_b / 2)
    return np.maximum(high - low, 0.0)


def _layer_geometry(boxes, params, layer):
    """(box cy, cx, h, w, nearest anchor cy, cx) of feature layer `layer`, [M, 1] each."""
    cy, cx, h, w = _centres_and_sizes(boxes)
    img_h, img_w = params.img_shape
    feat_h, feat_w = params.feat_shapes[layer]
    step = params.anchor_steps[layer]
    anchor_cy = _nearest_centre(cy, feat_h, step / img_h, params.anchor_offset)
    anchor_cx = _nearest_centre(cx, feat_w, step / img_w, params.anchor_offset)
    return tuple(v[:, None] for v in (cy, cx, h, w, anchor_cy, anchor_cx))


def _best_iou_in_cell(geometry, params, layer, sizes):
    cy, cx, h, w, anchor_cy, anchor_cx = geometry
    heights, widths = cell_anchor_sizes(params.img_shape, sizes, params.anchor_ratios[layer])
    inter = _overlap(cy, h, anchor_cy, heights[None, :]) * _overlap(cx, w, anchor_cx, widths[None, :])
    union = h * w + (heights * widths)[None, :] - inter
    return np.max(inter / np.maximum(union, 1e-12), axis=1)


def layer_best_ious(boxes, params, layer, sizes):
    """[M] best IoU of each box with the anchors of feature layer `layer` when its sizes are (s_k, s_k+1)."""
    return _best_iou_in_cell(_layer_geometry(boxes, params, layer), params, layer, sizes)


def best_ious(boxes, params):
    """[M] best IoU of each box (normalised yxyx [M, 4]) over all anchors of `params` (SSDParams)."""
    per_layer = [layer_best_ious(boxes, params, k, sizes) for k, sizes in enumerate(params.anchor_sizes)]
    return np.max(per_layer, axis=0) if per_layer and len(per_layer[0]) else np.zeros(0)


def box_sides_px(boxes, img_shape):
    """[M] side sqrt(h * w) of each box in pixels of the network input."""
    _, _, h, w = _centres_and_sizes(boxes)
    return np.sqrt(np.maximum(h * img_shape[0], 0) * np.maximum(w * img_shape[1], 0))


@dataclasses.dataclass(frozen=True)
class AnchorFit:
    """BPR of one set of anchors on a set of boxes."""
    num_boxes: int
    bpr: float                  # fraction of boxes with best IoU >= threshold
    median_iou: float           # median best IoU
    threshold: float


def anchor_fit(boxes, params, threshold):
    """AnchorFit of params' anchors on boxes (normalised yxyx)."""
    ious = best_ious(boxes, params)
    if not len(ious):
        return AnchorFit(0, 0.0, 0.0, threshold)
    return AnchorFit(len(ious), float(np.mean(ious >= threshold)), float(np.median(ious)), threshold)


def with_sizes(params, sizes):
    """params with per-layer anchor sizes (s_0..s_L) in pixels."""
    return params._replace(anchor_sizes=anchor_size_pairs(sizes))


def flat_sizes(params):
    """(s_0..s_L) of params: the first size of each layer, then the last layer's second."""
    return tuple(pair[0] for pair in params.anchor_sizes) + (params.anchor_sizes[-1][1],)


class _Fitness:
    """The fitness of candidate sizes, recomputing only the layers a changed size touches."""

    def __init__(self, boxes, params, threshold):
        self.params, self.threshold = params, threshold
        self.geometry = [_layer_geometry(boxes, params, k) for k in range(len(params.anchor_sizes))]

    def layer(self, k, sizes):
        return _best_iou_in_cell(self.geometry[k], self.params, k, (sizes[k], sizes[k + 1]))

    def score(self, best):
        return float(np.mean(best >= self.threshold) + IOU_WEIGHT * np.mean(best))

    def descend(self, sizes):
        """(fitness, sizes) after coordinate descent from `sizes`."""
        sizes = [round(float(s), 1) for s in sizes]
        per_layer = [self.layer(k, sizes) for k in range(len(self.geometry))]
        current = self.score(np.max(per_layer, axis=0))
        upper_bound = 1.5 * max(self.params.img_shape)
        for _ in range(_MAX_SWEEPS):
            moved = False
            for j in range(len(sizes)):
                touched = [k for k in (j - 1, j) if 0 <= k < len(per_layer)]
                others = [per_layer[k] for k in range(len(per_layer)) if k not in touched]
                low = sizes[j - 1] if j > 0 else _MIN_SIZE_PX
                high = sizes[j + 1] if j + 1 < len(sizes) else upper_bound
                for candidate in np.geomspace(low, max(high, low), _GRID_POINTS):
                    trial = sizes[:j] + [round(float(candidate), 1)] + sizes[j + 1:]
                    layers = {k: self.layer(k, trial) for k in touched}
                    score = self.score(np.max(others + list(layers.values()), axis=0))
                    if score > current + MIN_GAIN:
                        sizes, current, moved = trial, score, True
                        for k, ious in layers.items():
                            per_layer[k] = ious
            if not moved:
                break
        return current, tuple(sizes)


def quantile_sizes(boxes, params):
    """(s_0..s_L) at evenly spaced quantiles of the box sides (pixels), kept ordered and >= 2 px."""
    sides = box_sides_px(boxes, params.img_shape)
    count = len(params.anchor_sizes) + 1
    sizes = np.quantile(sides, np.linspace(0.02, 0.98, count)) if len(sides) else np.ones(count)
    return tuple(float(s) for s in np.maximum.accumulate(np.maximum(sizes, _MIN_SIZE_PX)))


def zoomed_boxes(boxes, zooms, rng):
    """Each box (normalised yxyx [M, 4]) with its height and width times zooms [M, 2] (at most the image),
    centred at a uniformly random place where it fits."""
    _, _, h, w = _centres_and_sizes(boxes)
    h, w = np.minimum(h * zooms[:, 0], 1.), np.minimum(w * zooms[:, 1], 1.)
    cy, cx = rng.uniform(h / 2, 1 - h / 2), rng.uniform(w / 2, 1 - w / 2)
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)


def fit_anchor_sizes(boxes, params, threshold, zoom_sampler=None):
    """Per-layer sizes (s_0..s_L), pixels, fitted to boxes (normalised yxyx [M, 4]) and, with zoom_sampler
    (rng, count) -> [count, 2] zooms of height and width, to one augmented copy of each: see the module doc.
    Deterministic (seeded)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return flat_sizes(params)
    rng = np.random.default_rng(0)
    if len(boxes) > MAX_FIT_BOXES:  # a fixed sample: the fit's BPR is then known to about +-0.01
        boxes = boxes[rng.choice(len(boxes), MAX_FIT_BOXES, replace=False)]
    if zoom_sampler is not None:
        boxes = np.concatenate([boxes, zoomed_boxes(boxes, zoom_sampler(rng, len(boxes)), rng)])
    fitness = _Fitness(boxes, params, threshold)
    from_builtin = fitness.descend(flat_sizes(params))
    from_quantiles = fitness.descend(quantile_sizes(boxes, params))
    return (from_quantiles if from_quantiles[0] > from_builtin[0] + MIN_GAIN else from_builtin)[1]
