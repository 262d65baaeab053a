"""PASCAL VOC average precision (AP) and mean AP, in plain numpy.

Detections are matched to the ground truth by the VOC devkit's rule (utils/voc_matching.py): each is a TP,
a FP or ignored (it took a difficult box). Recall is TP / (number of non-difficult ground truths).

Two AP rules (see `voc_ap`): VOC2007's 11-point interpolation and VOC2010+'s area under the monotone
precision envelope. Classes with no non-difficult ground truth get AP NaN and are left out of the mean;
a class with ground truth and no detections gets AP 0.
"""
import dataclasses
import unicodedata

import numpy as np

from utils.voc_matching import Detections, GroundTruth, Matches, match_detections

# The recall levels of published VOC07 numbers, py-faster-rcnn's voc_eval.py (used by SSD-Tensorflow, ssd.pytorch):
# the doubles arange yields, of which 0.3, 0.6 and 0.7 lie one ulp above the recalls 3/10, 6/10, 7/10, so those
# recalls do not reach them; exact tenths (k / 10) would give other APs.
_VOC07_RECALL_LEVELS = np.arange(0., 1.1, 0.1)


def voc_ap(recall, precision, use_07_metric):
    """Average precision from a precision/recall curve (points in descending score order).

    use_07_metric=True (VOC2007): AP = 1/11 * sum_{t in np.arange(0., 1.1, 0.1)} max(precision[recall >= t]),
      with max of an empty set = 0 (the published rule: see _VOC07_RECALL_LEVELS).
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
        # best[k] = max precision among points with recall >= _VOC07_RECALL_LEVELS[k].
        reached = recall[None, :] >= _VOC07_RECALL_LEVELS[:, None]
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
    recall: the fraction of the ground truth found by any detection (the curve's end: what AP can reach);
    recall_at_score, precision_at_score: those of the detections scoring at least operating_score, the cut a
    deployed detector makes (precision NaN when none does); all three NaN without ground truth.
    matches: each detection's outcome (for curves and pictures).
    """
    ap07: np.ndarray
    ap10: np.ndarray
    num_gt: np.ndarray
    num_detections: np.ndarray
    map07: float
    map10: float
    recall: np.ndarray
    recall_at_score: np.ndarray
    precision_at_score: np.ndarray
    operating_score: float
    matches: Matches = None

    @property
    def has_gt(self):
        """Boolean mask of classes that count in the mean (ground truth present, background excluded)."""
        mask = self.num_gt > 0
        mask[0] = False
        return mask


def precision_recall(scores, true_positive, num_gt):
    """Recall and precision after each detection of one class in descending score order (ties in input order).

    scores, true_positive [n]: the class's detections that are not ignored; num_gt: its non-difficult ground
    truths (when 0, recall is meaningless and reported as 0). Returns (recall [n], precision [n]).
    """
    hits = np.asarray(true_positive, dtype=bool)[np.argsort(-np.asarray(scores), kind='stable')]
    tp_cumulative = np.cumsum(hits)
    precision = tp_cumulative / np.arange(1, len(hits) + 1)
    return tp_cumulative / max(num_gt, 1), precision


def evaluate(detections, ground_truth, num_classes, iou_threshold=0.5, operating_score=0.5):
    """VOC AP per class by both rules for a whole data set (voc_matching's Detections, GroundTruth) -> VOCResults.

    num_classes: classes including background (VOC: 21). iou_threshold: TP when IoU >= it (VOC: 0.5).
    operating_score: the score cut of recall_at_score and precision_at_score (detect.py's default).
    """
    matches = match_detections(detections, ground_truth, num_classes, iou_threshold)
    classes = np.asarray(detections.classes, dtype=np.int64).reshape(-1)
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    ap07, ap10, found, recall_at, precision_at = (np.full(num_classes, np.nan) for _ in range(5))
    for class_id in np.flatnonzero(matches.num_gt):
        counted = (classes == class_id) & ~matches.ignored
        num_gt, hits = matches.num_gt[class_id], matches.true_positive[counted]
        recall, precision = precision_recall(scores[counted], hits, num_gt)
        ap07[class_id] = voc_ap(recall, precision, use_07_metric=True)
        ap10[class_id] = voc_ap(recall, precision, use_07_metric=False)
        found[class_id] = hits.sum() / num_gt
        confident = scores[counted] >= operating_score
        recall_at[class_id] = hits[confident].sum() / num_gt
        precision_at[class_id] = hits[confident].mean() if confident.any() else np.nan
    has_gt = matches.num_gt[1:] > 0
    map07 = float(np.mean(ap07[1:][has_gt])) if has_gt.any() else float('nan')
    map10 = float(np.mean(ap10[1:][has_gt])) if has_gt.any() else float('nan')
    return VOCResults(ap07=ap07, ap10=ap10, num_gt=matches.num_gt,
                      num_detections=np.bincount(classes, minlength=num_classes).astype(np.int64),
                      map07=map07, map10=map10, recall=found, recall_at_score=recall_at,
                      precision_at_score=precision_at, operating_score=operating_score, matches=matches)


class VOCEvaluator:
    """Accumulates batches of detections and ground truths (as produced by net.detect and make_dataset).

    Images get consecutive ids 0, 1, ... in the order they are added; `compute()` runs `evaluate`.
    """

    def __init__(self, num_classes, iou_threshold=0.5):
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.num_images = 0
        self._detections = []      # Detections of each batch
        self._ground_truths = []   # GroundTruth of each batch

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
        self._detections.append(Detections(
            np.broadcast_to(image_ids[:, None], det_valid.shape)[det_valid],
            np.asarray(detection_classes)[det_valid], np.asarray(detection_scores)[det_valid],
            np.asarray(detection_boxes)[det_valid]))
        self._ground_truths.append(GroundTruth(
            np.broadcast_to(image_ids[:, None], gt_valid.shape)[gt_valid],
            np.asarray(gt_labels)[gt_valid], np.asarray(gt_boxes)[gt_valid], np.asarray(gt_difficult)[gt_valid]))
        self.num_images += batch

    def detections(self):
        """Detections of every image added so far (image ids 0..num_images-1)."""
        return Detections(*_concatenated(self._detections))

    def ground_truth(self):
        """GroundTruth of every image added so far."""
        return GroundTruth(*_concatenated(self._ground_truths))

    def compute(self):
        """VOCResults over everything added so far."""
        if not self._detections:
            raise ValueError('VOCEvaluator.compute() called before any add_batch()')
        return evaluate(self.detections(), self.ground_truth(), self.num_classes, self.iou_threshold)


def _concatenated(batches):
    """Field-wise concatenation of dataclass instances -> list of arrays."""
    fields = [field.name for field in dataclasses.fields(batches[0])]
    return [np.concatenate([getattr(batch, name) for batch in batches]) for name in fields]


def _class_names(num_classes, class_names):
    """Names by class id: class_names[i] where given, else 'class <i>'."""
    return [class_names[i] if class_names is not None and i < len(class_names) else 'class %d' % i
            for i in range(num_classes)]


def _terminal_width(text):
    """Columns `text` takes in a terminal: East Asian wide and fullwidth characters (CJK) take two, combining
    marks none; len() would misalign the table's columns after such a name."""
    return sum(0 if unicodedata.category(char) in ('Mn', 'Me') else 2 if unicodedata.east_asian_width(char) in 'WF'
               else 1 for char in text)


def _pad(text, width):
    return text + ' ' * (width - _terminal_width(text))


def format_results_table(results, class_names=None):
    """A text table: one row per class (name, #GT, AP VOC07, AP VOC10+, recall, and recall and precision at
    results.operating_score), then the mAP row.

    class_names: list indexed by class id (index 0 = background); defaults to 'class <id>'.
    Classes without ground truth show 'no GT' and are not in the mean; '-' where no detection scores enough.
    """
    num_classes = len(results.num_gt)
    names = _class_names(num_classes, class_names)
    width = max([len('class'), len('mAP')] + [_terminal_width(name) for name in names[1:]])
    at = f'@{results.operating_score:g}'
    lines = ['%s %7s %8s %8s %8s %8s %8s' % (_pad('class', width), '#GT', 'AP07', 'AP10', 'recall', 'R' + at, 'P' + at)]
    for class_id in range(1, num_classes):
        if results.num_gt[class_id] > 0:
            values = (results.ap07[class_id], results.ap10[class_id], results.recall[class_id],
                      results.recall_at_score[class_id], results.precision_at_score[class_id])
            text = ' '.join('%8s' % '-' if np.isnan(value) else '%8.4f' % value for value in values)
        else:
            text = '%17s' % 'no GT'
        lines.append('%s %7d %s' % (_pad(names[class_id], width), results.num_gt[class_id], text))
    lines.append('%s %7d %8.4f %8.4f' % (_pad('mAP', width), int(results.num_gt[1:].sum()), results.map07,
                                         results.map10))
    return '\n'.join(lines)


def results_as_dict(results, class_names=None):
    """JSON-ready summary: {'map_voc07', 'map_voc2010', 'num_classes_with_gt', 'operating_score', 'per_class':
    {name: {'class_id', 'num_gt', 'num_detections', 'ap_voc07', 'ap_voc2010', 'recall', 'recall_at_score',
    'precision_at_score'}}}; NaN (no ground truth, or no detection at the score) becomes None."""
    def number(value):
        return None if np.isnan(value) else float(value)
    names = _class_names(len(results.num_gt), class_names)
    per_class = {names[i]: {'class_id': i, 'num_gt': int(results.num_gt[i]),
                            'num_detections': int(results.num_detections[i]),
                            'ap_voc07': number(results.ap07[i]), 'ap_voc2010': number(results.ap10[i]),
                            'recall': number(results.recall[i]), 'recall_at_score': number(results.recall_at_score[i]),
                            'precision_at_score': number(results.precision_at_score[i])}
                 for i in range(1, len(names))}
    return {'map_voc07': number(results.map07), 'map_voc2010': number(results.map10),
            'num_classes_with_gt': int(results.has_gt.sum()), 'operating_score': results.operating_score,
            'per_class': per_class}
