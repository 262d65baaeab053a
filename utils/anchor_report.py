"""The anchor-fit report: how many training boxes a network's anchors can match (nets/anchor_fit.py), how big
the boxes are at the network's input, and, when the best possible recall is below anchor_fit.BPR_WARNING, a
warning naming what would help with the BPR each option would give.

Printed in training's start-up report (for the network being trained) and in tf_convert_data.py's summary
(for each SSD model with its built-in anchors).
"""
import dataclasses

import numpy as np

from nets import anchor_fit, nets_factory
from preprocessing.ssd_vgg_preprocessing import sample_box_zooms


@dataclasses.dataclass(frozen=True)
class Option:
    """A change of settings and the BPR it gives."""
    flags: str
    bpr: float


def sizes_text(sizes):
    """(12.6, 20.0, ...) -> '12.6,20,...': the --anchor_sizes value."""
    return ','.join(f'{s:g}' for s in sizes)


def fitted_sizes(boxes, params, threshold):
    """--anchor_sizes=auto: sizes fitted to the boxes and to their copies as the SSD-VGG augmentation of
    both models zooms them (preprocessing/ssd_vgg_preprocessing.sample_box_zooms)."""
    return anchor_fit.fit_anchor_sizes(boxes, params, threshold, sample_box_zooms)


def _params(model_name):
    return nets_factory.get_network(model_name, 2).params


def options(boxes, model_name, params, threshold, fitted):
    """Options better than params' anchors on boxes, best first: fitted sizes on this model (unless `fitted`
    already), then the other models with their built-in and their fitted sizes."""
    current = anchor_fit.anchor_fit(boxes, params, threshold).bpr
    found = []
    for name in (model_name,) + tuple(n for n in nets_factory.MODEL_NAMES if n != model_name):
        base = params if name == model_name else _params(name)
        model_flag = '' if name == model_name else f'--model_name={name} '
        if name != model_name:
            found.append(Option(model_flag.strip(), anchor_fit.anchor_fit(boxes, base, threshold).bpr))
        if name != model_name or not fitted:
            sizes = fitted_sizes(boxes, base, threshold)
            bpr = anchor_fit.anchor_fit(boxes, anchor_fit.with_sizes(base, sizes), threshold).bpr
            found.append(Option(f'{model_flag}--anchor_sizes=auto (fits --anchor_sizes={sizes_text(sizes)})', bpr))
    return sorted((option for option in found if option.bpr > current), key=lambda option: -option.bpr)


def fit_lines(boxes, model_name, params, threshold, builtin_params=None, where='the training boxes'):
    """The report's lines for params' anchors (SSDParams of model_name) on boxes (normalised yxyx [M, 4]);
    builtin_params: the model's own anchors when params' sizes are --anchor_sizes=auto's, whose recall is then
    shown beside; the last lines warn when BPR is low."""
    fit = anchor_fit.anchor_fit(boxes, params, threshold)
    if not fit.num_boxes:
        return [f'anchor fit: no boxes in {where}']
    sides = np.quantile(anchor_fit.box_sides_px(boxes, params.img_shape), anchor_fit.SIDE_QUANTILES)
    height, width = params.img_shape
    builtin = (f' (the built-in sizes: {anchor_fit.anchor_fit(boxes, builtin_params, threshold).bpr:.3f})'
               if builtin_params else '')
    lines = [f'anchor fit on {fit.num_boxes} boxes of {where}: best possible recall {fit.bpr:.3f}{builtin} (boxes '
             f'with an anchor at IoU >= {threshold:g}), median best IoU {fit.median_iou:.2f}',
             f'  box sides at {height}x{width} (sqrt of area, px, quantiles): ' + ', '.join(
                 f'{"median" if q == 0.5 else f"{q:.0%}"} {s:.0f}' for q, s in zip(anchor_fit.SIDE_QUANTILES, sides))]
    if fit.bpr >= anchor_fit.BPR_WARNING:
        return lines
    better = options(boxes, model_name, params, threshold, fitted=builtin_params is not None)
    lines.append(f'  WARNING: only {fit.bpr:.0%} of these boxes have an anchor at IoU >= {threshold:g}; the others '
                 f'train only through their one forced best match. '
                 + ('What would help:' if better else 'No other anchor sizes or SSD model do better.'))
    lines += [f'    {option.flags}: BPR {option.bpr:.3f}' for option in better]
    return lines


def models_fit_lines(boxes, where, threshold=0.5):
    """fit_lines for every SSD model with its built-in anchors (the converter's summary)."""
    lines = []
    for name in nets_factory.MODEL_NAMES:
        lines += [f'{name}, built-in anchors:'] + ['  ' + line for line in fit_lines(
            boxes, name, _params(name), threshold, where=where)]
    return lines
