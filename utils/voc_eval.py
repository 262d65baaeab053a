"""PASCAL VOC average precision (AP) and mean AP, in plain numpy.

Matching rule (the VOC devkit's, as in its `VOCevaldet.m`): for one class, detections are taken in
descending score order (ties keep their input order: a stable sort). Each detection is compared with the
ground truths of its class in its image, difficult ones included, and takes the one of highest IoU
(the first of equal ones). If that IoU >= `iou_threshold`:
  - the ground truth is difficult      -> the detection is ignored (neither TP nor FP);
  - the ground truth is not yet taken  -> TP, and the ground truth is taken;
  - the ground truth is already taken  -> FP (a duplicate), even if another free box overlaps >= threshold.
Otherwise the detection is FP. Recall is TP / (number of non-difficult ground truths).

Because every detection's best ground truth does not depend on which boxes are already taken, the greedy
assignment reduces to "the first detection, in score order, that picks a ground truth is its TP": that is
computed for a whole class at once with `np.unique(..., return_index=True)` (no per-detection loop).

Boxes are normalised floats (ymin, xmin, ymax, xmax), so IoU uses continuous areas
(ymax - ymin) * (xmax - xmin) without the devkit's +1 pixel convention.

Two AP rules (see `voc_ap`): VOC2007's 11-point interpolation and VOC2010+'s area under the monotone
precision envelope. Classes with no non-difficult ground truth get AP NaN and are left out of the mean;
a class with ground truth and no detections gets AP 0.
"""
import dataclasses

import numpy as np

from nets import box_coder

# Detections x padded ground truths compared at once; bounds memory of the IoU matrix (~16 MB of float64).
_MAX_PAIRS_PER_CHUNK = 2_000_000


def voc_ap(recall, precision, use_07_metric):
    """Average precision from a precision/recall curve (points in descending score order).

    use_07_metric=True (VOC2007): AP = 1/11 * sum_{t in 0, 0.1, ..., 1} max(precision[recall >= t]),
      with max of an empty set = 0.
    use_07_metric=False (VOC2010+): with recall padded by 0 and 1 and precision by 0 and 0, the envelope
      p_env(i) = max_{j >= i} precision(j); AP = sum_i (recall[i+1] - recall[i]) * p_env(i+1).
    recall, precision: 1-D arrays of equal length (may be empty -> AP 0).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError('recall and precision must be 1-D arrays of equal length, got shapes %s and %s'
                         % (recall.shape, precision.shape))
    if use_07_metric:
        # i / 10 is the correctly rounded double, equal to a recall such as 3/10 or 6/20 (arange(0, 1.1, 0.1) is not).
        thresholds = np.arange(11) / 10.0
        # best[k] = max precision among points with recall >= thresholds[k].
        reached = recall[None, :] >= thresholds[:, None]
        best = np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)
        return float(best.sum() / 11.0)
    padded_recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    return float(np.sum(np.diff(padded_recall) * envelope[1:]))


@dataclasses.dataclass
class VOCResults:
    """Per-class evaluation; arrays indexed by class id 0..num_classes-1 (0 = background, always unused).

    ap07, ap10: AP by the VOC2007 and VOC2010+ rules, NaN where the class has no non-difficult ground truth.
    num_gt: non-difficult ground truths per class; num_detections: detections per class.
    map07, map10: mean of ap07 / ap10 over classes 1.. with num_gt > 0 (NaN when there are none).
    """
    ap07: np.ndarray
    ap10: np.ndarray
    num_gt: np.ndarray
    num_detections: np.ndarray
    map07: float
    map10: float

    @property
    def has_gt(self):
        """Boolean mask of classes that count in the mean (ground truth present, background excluded)."""
        mask = self.num_gt > 0
        mask[0] = False
        return mask


def _best_ground_truth(det_images, det_boxes, gt_images, gt_boxes, num_images):
    """For each detection, the index of its highest-IoU ground truth in the same image and that IoU.

    det_images [D] and gt_images [G]: dense image indices < num_images; gt arrays of one class.
    Returns (best_index [D] int64, -1 when the image has no ground truth; best_iou [D] float64, -1 then).
    Ground truths are grouped per image (stable, so ties go to the first in input order) and padded to the
    largest group, so one [D, Gmax] IoU matrix per chunk replaces a Python loop over detections.
    """
    num_dets = len(det_images)
    best_index = np.full(num_dets, -1, dtype=np.int64)
    best_iou = np.full(num_dets, -1.0)
    if num_dets == 0 or len(gt_images) == 0:
        return best_index, best_iou
    order = np.argsort(gt_images, kind='stable')
    counts = np.bincount(gt_images, minlength=num_images)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    max_per_image = int(counts.max())
    slots = np.arange(max_per_image)
    chunk = max(1, _MAX_PAIRS_PER_CHUNK // max_per_image)
    for begin in range(0, num_dets, chunk):
        images = det_images[begin:begin + chunk]
        valid = slots[None, :] < counts[images][:, None]                      # [d, Gmax]
        sorted_pos = np.where(valid, starts[images][:, None] + slots[None, :], 0)
        candidates = order[sorted_pos]                                          # indices into gt arrays
        ious = np.where(valid, box_coder.broadcast_iou_np(det_boxes[begin:begin + chunk, None, :],
                                                          gt_boxes[candidates]), -1.0)
        column = np.argmax(ious, axis=1)
        rows = np.arange(len(images))
        has_gt = valid[:, 0]
        best_index[begin:begin + chunk] = np.where(has_gt, candidates[rows, column], -1)
        best_iou[begin:begin + chunk] = np.where(has_gt, ious[rows, column], -1.0)
    return best_index, best_iou


def _class_precision_recall(det_images, det_scores, det_boxes, gt_images, gt_boxes, gt_difficult,
                            num_images, iou_threshold):
    """Precision and recall curves of one class, over its non-ignored detections in score order.

    Returns (recall [n], precision [n], num_gt), n = detections not ignored, num_gt = non-difficult ground
    truths (when it is 0 recall is meaningless and the caller reports the class as having no ground truth).
    """
    order = np.argsort(-det_scores, kind='stable')
    best_index, best_iou = _best_ground_truth(det_images[order], det_boxes[order], gt_images, gt_boxes,
                                              num_images)
    matched = best_iou >= iou_threshold
    target = np.where(matched, best_index, -1)
    ignored = np.zeros(len(target), dtype=bool)
    ignored[matched] = gt_difficult[target[matched]] != 0
    # The first detection (in score order) to pick a ground truth gets it; later ones are duplicates.
    first_pick = np.zeros(len(target), dtype=bool)
    picked = np.flatnonzero(matched)
    _, first_of_each = np.unique(target[picked], return_index=True)
    first_pick[picked[first_of_each]] = True
    true_positive = (first_pick & ~ignored)[~ignored]
    tp_cumulative = np.cumsum(true_positive)
    ranks = np.arange(1, len(true_positive) + 1)
    num_gt = int(np.sum(gt_difficult == 0))
    precision = tp_cumulative / np.maximum(ranks, 1)
    recall = tp_cumulative / max(num_gt, 1)
    return recall, precision, num_gt


def evaluate_detections(det_image_ids, det_classes, det_scores, det_boxes,
                        gt_image_ids, gt_classes, gt_boxes, gt_difficult,
                        num_classes, iou_threshold=0.5):
    """VOC AP per class by both rules for a whole data set (matching rule: see the module docstring).

    det_image_ids [D], gt_image_ids [G]: image identifiers (any comparable values: ints or strings).
    det_classes [D], gt_classes [G]: class ids in 1..num_classes-1 (0 = background is not allowed).
    det_scores [D] float; det_boxes [D, 4], gt_boxes [G, 4]: normalised yxyx floats.
    gt_difficult [G]: nonzero for difficult ground truths (ignored: neither TP, FP nor counted in recall).
    num_classes: classes including background (VOC: 21). iou_threshold: TP when IoU >= it (VOC: 0.5).
    Returns a VOCResults.
    """
    det_classes = np.asarray(det_classes, dtype=np.int64).reshape(-1)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_difficult = np.asarray(gt_difficult, dtype=np.int64).reshape(-1)
    det_image_ids = np.asarray(det_image_ids).reshape(-1)
    gt_image_ids = np.asarray(gt_image_ids).reshape(-1)
    if not len(det_image_ids) == len(det_classes) == len(det_scores) == len(det_boxes):
        raise ValueError('detection arrays differ in length: image ids %d, classes %d, scores %d, boxes %d'
                         % (len(det_image_ids), len(det_classes), len(det_scores), len(det_boxes)))
    if not len(gt_image_ids) == len(gt_classes) == len(gt_boxes) == len(gt_difficult):
        raise ValueError('ground-truth arrays differ in length: image ids %d, classes %d, boxes %d, difficult %d'
                         % (len(gt_image_ids), len(gt_classes), len(gt_boxes), len(gt_difficult)))
    for name, classes in (('detection', det_classes), ('ground-truth', gt_classes)):
        if classes.size and (classes.min() < 1 or classes.max() >= num_classes):
            raise ValueError('%s classes must lie in 1..%d, got %d..%d'
                             % (name, num_classes - 1, classes.min(), classes.max()))
    all_ids = np.concatenate((det_image_ids, gt_image_ids)) if len(gt_image_ids) else det_image_ids
    _, dense_ids = np.unique(all_ids, return_inverse=True)
    det_images, gt_images = dense_ids[:len(det_image_ids)], dense_ids[len(det_image_ids):]
    num_images = int(dense_ids.max()) + 1 if dense_ids.size else 0

    ap07 = np.full(num_classes, np.nan)
    ap10 = np.full(num_classes, np.nan)
    num_gt = np.zeros(num_classes, dtype=np.int64)
    num_detections = np.bincount(det_classes, minlength=num_classes).astype(np.int64)
    for class_id in range(1, num_classes):
        in_det = det_classes == class_id
        in_gt = gt_classes == class_id
        recall, precision, num_gt[class_id] = _class_precision_recall(
            det_images[in_det], det_scores[in_det], det_boxes[in_det], gt_images[in_gt], gt_boxes[in_gt],
            gt_difficult[in_gt], num_images, iou_threshold)
        if num_gt[class_id] > 0:
            ap07[class_id] = voc_ap(recall, precision, use_07_metric=True)
            ap10[class_id] = voc_ap(recall, precision, use_07_metric=False)
    counted = num_gt[1:] > 0
    map07 = float(np.mean(ap07[1:][counted])) if counted.any() else float('nan')
    map10 = float(np.mean(ap10[1:][counted])) if counted.any() else float('nan')
    return VOCResults(ap07=ap07, ap10=ap10, num_gt=num_gt, num_detections=num_detections, map07=map07, map10=map10)


class VOCEvaluator:
    """Accumulates batches of detections and ground truths (as produced by net.detect and make_dataset).

    Images get consecutive ids in the order they are added; `compute()` runs `evaluate_detections`.
    """

    def __init__(self, num_classes, iou_threshold=0.5):
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.num_images = 0
        self._detections = []      # tuples (image_ids, classes, scores, boxes)
        self._ground_truths = []   # tuples (image_ids, classes, boxes, difficult)

    def add_batch(self, detection_boxes, detection_scores, detection_classes, num_detections,
                  gt_boxes, gt_labels, gt_difficult, num_boxes):
        """Adds B images.

        detection_boxes [B, K, 4] normalised yxyx, detection_scores [B, K], detection_classes [B, K],
        num_detections [B]: the first num_detections[b] rows of image b are valid.
        gt_boxes [B, M, 4], gt_labels [B, M], gt_difficult [B, M], num_boxes [B]: padded ground truth.
        """
        num_detections = np.asarray(num_detections).reshape(-1)
        num_boxes = np.asarray(num_boxes).reshape(-1)
        batch = len(num_detections)
        image_ids = self.num_images + np.arange(batch)
        det_valid = np.arange(np.shape(detection_scores)[1])[None, :] < num_detections[:, None]
        gt_valid = np.arange(np.shape(gt_labels)[1])[None, :] < num_boxes[:, None]
        self._detections.append((
            np.broadcast_to(image_ids[:, None], det_valid.shape)[det_valid],
            np.asarray(detection_classes)[det_valid], np.asarray(detection_scores)[det_valid],
            np.asarray(detection_boxes)[det_valid]))
        self._ground_truths.append((
            np.broadcast_to(image_ids[:, None], gt_valid.shape)[gt_valid],
            np.asarray(gt_labels)[gt_valid], np.asarray(gt_boxes)[gt_valid], np.asarray(gt_difficult)[gt_valid]))
        self.num_images += batch

    def compute(self):
        """VOCResults over everything added so far."""
        if not self._detections:
            raise ValueError('VOCEvaluator.compute() called before any add_batch()')
        dets = [np.concatenate(parts) for parts in zip(*self._detections)]
        gts = [np.concatenate(parts) for parts in zip(*self._ground_truths)]
        return evaluate_detections(*dets, *gts, num_classes=self.num_classes, iou_threshold=self.iou_threshold)


def _class_names(num_classes, class_names):
    """Names by class id: class_names[i] where given, else 'class <i>'."""
    return [class_names[i] if class_names is not None and i < len(class_names) else 'class %d' % i
            for i in range(num_classes)]


def format_results_table(results, class_names=None):
    """A text table: one row per class (name, #GT, AP VOC07, AP VOC10+), then the mAP row.

    class_names: list indexed by class id (index 0 = background); defaults to 'class <id>'.
    Classes without ground truth show 'no GT' and are not in the mean.
    """
    num_classes = len(results.num_gt)
    names = _class_names(num_classes, class_names)
    width = max([len('class'), len('mAP')] + [len(name) for name in names[1:]])
    lines = ['%-*s %7s %8s %8s' % (width, 'class', '#GT', 'AP07', 'AP10')]
    for class_id in range(1, num_classes):
        if results.num_gt[class_id] > 0:
            ap_text = '%8.4f %8.4f' % (results.ap07[class_id], results.ap10[class_id])
        else:
            ap_text = '%17s' % 'no GT'
        lines.append('%-*s %7d %s' % (width, names[class_id], results.num_gt[class_id], ap_text))
    lines.append('%-*s %7d %8.4f %8.4f' % (width, 'mAP', int(results.num_gt[1:].sum()), results.map07, results.map10))
    return '\n'.join(lines)


def results_as_dict(results, class_names=None):
    """JSON-ready summary: {'map_voc07', 'map_voc2010', 'num_classes_with_gt', 'per_class': {name: {'class_id',
    'num_gt', 'num_detections', 'ap_voc07', 'ap_voc2010'}}}; NaN (no ground truth) becomes None."""
    def number(value):
        return None if np.isnan(value) else float(value)
    names = _class_names(len(results.num_gt), class_names)
    per_class = {names[i]: {'class_id': i, 'num_gt': int(results.num_gt[i]),
                            'num_detections': int(results.num_detections[i]),
                            'ap_voc07': number(results.ap07[i]), 'ap_voc2010': number(results.ap10[i])}
                 for i in range(1, len(names))}
    return {'map_voc07': number(results.map07), 'map_voc2010': number(results.map10),
            'num_classes_with_gt': int(results.has_gt.sum()), 'per_class': per_class}
