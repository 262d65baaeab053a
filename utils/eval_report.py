"""What eval_ssd_network.py reports of one evaluated checkpoint: the VOC and COCO tables, TensorBoard summaries
(mAP and per-class AP, COCO figures, per-class PR curves, images), --results_json and, with a plot
directory, PNG files of the PR curves and a grid of test images with their detections.
"""
import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow.compat.v1 as tf

from utils import coco_eval, eval_plots, voc_eval
from utils.file_io import write_json_atomically


@dataclasses.dataclass
class Outcome:
    """One checkpoint's (or TFLite model's) evaluation; prefix: the checkpoint or the model's file.

    evaluated: (voc_matching Detections, GroundTruth, Matches) of every image, image ids 0..N-1.
    images: uint8 [H, W, 3] of the first test images (ids 0, 1, ...) for the detection grid (may be empty).
    images_summary: serialized TensorBoard image summary, or None. skipped: descriptions of the records that
    could not be decoded.
    """
    prefix: str
    step: Optional[int]
    results: voc_eval.VOCResults
    coco: coco_eval.COCOResults
    evaluated: tuple
    num_images: int
    elapsed: float
    images_summary: Optional[bytes] = None
    skipped: list = dataclasses.field(default_factory=list)
    images: list = dataclasses.field(default_factory=list)


def scalar_summary(outcome, class_names):
    """tf.Summary with mAP (both VOC rules), the AP of every class that has ground truth and the COCO figures
    ('COCO/<results_as_dict key>', those without ground truth in their bin left out)."""
    results = outcome.results
    values = [tf.Summary.Value(tag='mAP/VOC07', simple_value=results.map07),
              tf.Summary.Value(tag='mAP/VOC2010', simple_value=results.map10)]
    for class_id in np.flatnonzero(results.has_gt):
        values.append(tf.Summary.Value(tag='AP_VOC07/' + class_names[class_id], simple_value=results.ap07[class_id]))
        values.append(tf.Summary.Value(tag='AP_VOC2010/' + class_names[class_id],
                                       simple_value=results.ap10[class_id]))
    values.extend(tf.Summary.Value(tag='COCO/' + name, simple_value=value)
                  for name, value in coco_eval.results_as_dict(outcome.coco).items() if value is not None)
    return tf.Summary(value=values)


def _class_curves(outcome, class_names):
    detections, _, matches = outcome.evaluated
    return eval_plots.class_curves(detections, matches, class_names)


def print_tables(outcome, class_names, split, iou_threshold):
    """Speed line, the VOC table under a legend (split, IoU threshold, which AP rules), COCO table, and the line
    about skipped records."""
    step = '' if outcome.step is None else f' (step {outcome.step})'   # None: a TFLite model, a published checkpoint
    print('%s%s: %d images in %.1f s (%.1f images/s)' % (
        outcome.prefix, step, outcome.num_images, outcome.elapsed, outcome.num_images / max(outcome.elapsed, 1e-9)))
    # Beside COCO's AP50 and AP75, 'AP10' reads as AP at IoU 0.10.
    at = f'{outcome.results.operating_score:g}'
    print(f'Split {split!r}, IoU >= {iou_threshold:g}. AP07: VOC2007 11-point AP; AP10: VOC2010+ area under the PR '
          f'curve (10: the year, not an IoU); recall: of all detections; R@{at}, P@{at}: recall and precision of '
          f'those scoring {at} or more (detect.py\'s default --score_threshold)')
    print(voc_eval.format_results_table(outcome.results, class_names))
    print(coco_eval.format_results_table(outcome.coco), flush=True)
    if outcome.skipped:
        print(f'{len(outcome.skipped)} test image(s) skipped: they cannot be decoded (the last: '
              f'{outcome.skipped[-1]}); their ground truth, where it could be read, counts as missed', flush=True)


def write_summaries(writer, outcome, class_names):
    """Scalars, PR curves and (when computed) the image summary at the checkpoint's step."""
    step = outcome.step or 0
    writer.add_summary(scalar_summary(outcome, class_names), step)
    writer.add_summary(eval_plots.pr_curve_summary(_class_curves(outcome, class_names)), step)
    if outcome.images_summary is not None:
        writer.add_summary(outcome.images_summary, step)
    writer.flush()


def write_results_json(path, outcome, class_names, run_facts):
    """VOC per-class AP and mAP, 'coco' figures, checkpoint, step, image counts and run_facts, atomically. A
    TFLite model's run_facts name it ('model'), and then no checkpoint is named."""
    payload = voc_eval.results_as_dict(outcome.results, class_names)
    if 'model' not in run_facts:
        payload['checkpoint_path'] = outcome.prefix
    payload.update(coco=coco_eval.results_as_dict(outcome.coco), global_step=outcome.step,
                   num_images=outcome.num_images, num_skipped=len(outcome.skipped), **run_facts)
    write_json_atomically(path, payload)


def write_plots(plot_dir, outcome, class_names, score_threshold):
    """pr_<class>.png per class with ground truth and detections.png (outcome.images with the detections
    scoring >= score_threshold and the missed ground truth) in plot_dir, replacing earlier ones; the paths."""
    paths = eval_plots.save_pr_curve_pngs(plot_dir, _class_curves(outcome, class_names))
    if outcome.images:
        pictures = eval_plots.pictures_of(outcome.images, outcome.evaluated, class_names, score_threshold)
        paths.append(eval_plots.save_detection_grid(os.path.join(plot_dir, 'detections.png'), pictures))
    return paths
