"""The VOC devkit's matching of detections to ground truth (its `VOCevaldet.m`), in plain numpy.

For one class, detections are taken in descending score order (ties keep their input order: a stable sort).
Each detection is compared with the ground truths of its class in its image, difficult ones included, and
takes the one of highest IoU (the first of equal ones). If that IoU >= `iou_threshold`:
  - the ground truth is difficult      -> the detection is ignored (neither TP nor FP);
  - the ground truth is not yet taken  -> TP, and the ground truth is taken;
  - the ground truth is already taken  -> FP (a duplicate), even if another free box overlaps >= threshold.
Otherwise the detection is FP.

Because every detection's best ground truth does not depend on which boxes are already taken, the greedy
assignment reduces to "the first detection, in score order, that picks a ground truth is its TP": that is
computed for a whole class at once with `np.unique(..., return_index=True)` (no per-detection loop). It also
means a detection's outcome depends only on the detections scored above it.

Boxes are normalised floats (ymin, xmin, ymax, xmax), so IoU uses continuous areas
(ymax - ymin) * (xmax - xmin) without the devkit's +1 pixel convention.
"""
import dataclasses

import numpy as np

from nets import box_coder

# Detections x padded ground truths compared at once; bounds memory of the IoU matrix (~16 MB of float64).
_MAX_PAIRS_PER_CHUNK = 2_000_000


@dataclasses.dataclass
class Detections:
    """Flat detections of a data set: image_ids [D] (ints or strings), classes [D] in 1..K-1, scores [D],
    boxes [D, 4] normalised (ymin, xmin, ymax, xmax)."""
    image_ids: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


@dataclasses.dataclass
class GroundTruth:
    """Flat ground truth: image_ids [G], classes [G] in 1..K-1, boxes [G, 4] normalised yxyx, difficult [G]
    (nonzero: ignored, neither TP, FP nor counted in recall)."""
    image_ids: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray


@dataclasses.dataclass
class Matches:
    """The VOC outcome of every detection, indexed like the Detections (see the module docstring).

    true_positive [D] bool; ignored [D] bool (it took a difficult ground truth); gt_index [D] int64: the index
    in GroundTruth of the box a TP or ignored detection took, -1 for a FP; num_gt [K]: non-difficult ground
    truths per class.
    """
    true_positive: np.ndarray
    ignored: np.ndarray
    gt_index: np.ndarray
    num_gt: np.ndarray



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


def _match_class(det_images, det_scores, det_boxes, gt_images, gt_boxes, gt_difficult, num_images,
                 iou_threshold):
    """The outcome of each detection of one class, in input order: (true_positive [n] bool, ignored [n] bool,
    gt_index [n] int64 into the class's ground truths, -1 for a FP)."""
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
    true_positive = first_pick & ~ignored
    outcome = (true_positive, ignored, np.where(true_positive | ignored, target, -1))
    in_input_order = [np.empty_like(values) for values in outcome]
    for unsorted, values in zip(in_input_order, outcome):
        unsorted[order] = values
    return tuple(in_input_order)


def _checked(detections, ground_truth, num_classes):
    """Copies as flat arrays of the evaluation dtypes; ValueError for unequal lengths or bad class ids."""
    detections = Detections(np.asarray(detections.image_ids).reshape(-1),
                            np.asarray(detections.classes, dtype=np.int64).reshape(-1),
                            np.asarray(detections.scores, dtype=np.float64).reshape(-1),
                            np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4))
    ground_truth = GroundTruth(np.asarray(ground_truth.image_ids).reshape(-1),
                               np.asarray(ground_truth.classes, dtype=np.int64).reshape(-1),
                               np.asarray(ground_truth.boxes, dtype=np.float64).reshape(-1, 4),
                               np.asarray(ground_truth.difficult, dtype=np.int64).reshape(-1))
    for name, record in (('detection', detections), ('ground-truth', ground_truth)):
        lengths = {field.name: len(getattr(record, field.name)) for field in dataclasses.fields(record)}
        if len(set(lengths.values())) > 1:
            raise ValueError('%s arrays differ in length: %s' % (name, lengths))
    for name, classes in (('detection', detections.classes), ('ground-truth', ground_truth.classes)):
        if classes.size and (classes.min() < 1 or classes.max() >= num_classes):
            raise ValueError('%s classes must lie in 1..%d, got %d..%d'
                             % (name, num_classes - 1, classes.min(), classes.max()))
    return detections, ground_truth


def match_detections(detections, ground_truth, num_classes, iou_threshold=0.5):
    """Matches (each detection's TP / FP / ignored outcome) by the VOC rule; inputs: Detections, GroundTruth."""
    detections, ground_truth = _checked(detections, ground_truth, num_classes)
    num_dets = len(detections.scores)
    all_ids = np.concatenate((detections.image_ids, ground_truth.image_ids)) if len(ground_truth.image_ids) \
        else detections.image_ids
    _, dense_ids = np.unique(all_ids, return_inverse=True)
    det_images, gt_images = dense_ids[:num_dets], dense_ids[num_dets:]
    num_images = int(dense_ids.max()) + 1 if dense_ids.size else 0
    matches = Matches(np.zeros(num_dets, dtype=bool), np.zeros(num_dets, dtype=bool),
                      np.full(num_dets, -1, dtype=np.int64), np.zeros(num_classes, dtype=np.int64))
    for class_id in range(1, num_classes):
        in_det = np.flatnonzero(detections.classes == class_id)
        in_gt = np.flatnonzero(ground_truth.classes == class_id)
        true_positive, ignored, class_gt_index = _match_class(
            det_images[in_det], detections.scores[in_det], detections.boxes[in_det], gt_images[in_gt],
            ground_truth.boxes[in_gt], ground_truth.difficult[in_gt], num_images, iou_threshold)
        matches.true_positive[in_det], matches.ignored[in_det] = true_positive, ignored
        took = class_gt_index >= 0
        matches.gt_index[in_det[took]] = in_gt[class_gt_index[took]]
        matches.num_gt[class_id] = int(np.sum(ground_truth.difficult[in_gt] == 0))
    return matches
