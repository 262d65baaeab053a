"""COCO-style detection metrics by pycocotools' COCOeval, fed from the arrays VOC evaluation uses.

AP is averaged over IoU thresholds 0.5:0.05:0.95 and 101 recall levels; AP50 and AP75 at one threshold;
AP small / medium / large over ground truths of area < 32^2, 32^2..96^2, > 96^2 pixels; AR@100 is the recall
with at most 100 detections per image and class, averaged over the same thresholds. COCOeval counts at most
100 detections per image and class; published COCO results keep 100 per image in all.

Boxes are normalised (ymin, xmin, ymax, xmax); COCO needs pixels, so each image's (height, width) is given.
Difficult VOC boxes become crowd regions (`iscrowd=1`): COCOeval's `_prepare` overwrites a plain `ignore` flag
with `iscrowd`, so only the crowd flag is honoured. A detection matched to a crowd region is neither TP nor FP
(several may match it) and crowd regions are not counted in recall, as VOC treats difficult boxes; its overlap
with a crowd region is COCO's, intersection / detection area.
"""
import contextlib
import dataclasses
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# COCOeval.stats positions of the figures reported (the order summarize() prints them in).
_STAT_INDEX = {'ap': 0, 'ap50': 1, 'ap75': 2, 'ap_small': 3, 'ap_medium': 4, 'ap_large': 5, 'ar100': 8}
_LABELS = {'ap': 'AP@[.5:.95]', 'ap50': 'AP50', 'ap75': 'AP75', 'ap_small': 'AP small', 'ap_medium': 'AP medium',
           'ap_large': 'AP large', 'ar100': 'AR@100'}


@dataclasses.dataclass
class COCOResults:
    """COCOeval's figures; NaN where it has no ground truth to average over (its -1)."""
    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar100: float


def boxes_to_pixel_xywh(boxes_yxyx, image_heights, image_widths):
    """Normalised yxyx [N, 4] with each box's image size [N] -> pixel (x, y, width, height) [N, 4] float64."""
    boxes = np.asarray(boxes_yxyx, dtype=np.float64).reshape(-1, 4)
    heights = np.asarray(image_heights, dtype=np.float64)
    widths = np.asarray(image_widths, dtype=np.float64)
    x, y = boxes[:, 1] * widths, boxes[:, 0] * heights
    return np.stack([x, y, boxes[:, 3] * widths - x, boxes[:, 2] * heights - y], axis=1)


def _annotations(image_ids, classes, boxes, image_sizes):
    """COCO annotation dicts (ids from 1: COCOeval takes id 0 for 'unmatched') without crowd flags or scores."""
    image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    xywh = boxes_to_pixel_xywh(boxes, image_sizes[image_ids, 0], image_sizes[image_ids, 1])
    return [{'id': index + 1, 'image_id': int(image), 'category_id': int(class_id), 'bbox': box.tolist(),
             'area': float(box[2] * box[3])}
            for index, (image, class_id, box) in enumerate(zip(image_ids, np.asarray(classes).reshape(-1), xywh))]


def _coco(image_sizes, num_classes, annotations):
    """A COCO object over images 0..N-1 of the given sizes and categories 1..num_classes-1."""
    coco = COCO()
    coco.dataset = {'images': [{'id': image, 'height': int(height), 'width': int(width)}
                               for image, (height, width) in enumerate(image_sizes)],
                    'categories': [{'id': class_id, 'name': str(class_id)} for class_id in range(1, num_classes)],
                    'annotations': annotations}
    with contextlib.redirect_stdout(io.StringIO()):   # createIndex prints progress
        coco.createIndex()
    return coco


def evaluate(detections, ground_truth, image_sizes, num_classes):
    """COCOResults of voc_matching's Detections and GroundTruth over images 0..N-1 (VOCEvaluator's ids).

    image_sizes [N, 2]: (height, width) in pixels of each image, indexed by image id.
    num_classes: classes including background; class ids 1..num_classes-1.
    """
    image_sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
    truths = _annotations(ground_truth.image_ids, ground_truth.classes, ground_truth.boxes, image_sizes)
    for annotation, difficult in zip(truths, np.asarray(ground_truth.difficult).reshape(-1)):
        annotation['iscrowd'] = int(difficult != 0)
    found = _annotations(detections.image_ids, detections.classes, detections.boxes, image_sizes)
    for annotation, score in zip(found, np.asarray(detections.scores, dtype=np.float64).reshape(-1)):
        annotation.update(score=float(score), iscrowd=0)
    evaluation = COCOeval(_coco(image_sizes, num_classes, truths), _coco(image_sizes, num_classes, found), 'bbox')
    with contextlib.redirect_stdout(io.StringIO()):   # COCOeval prints progress and its own table
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return COCOResults(**{name: float(evaluation.stats[index]) if evaluation.stats[index] >= 0 else float('nan')
                          for name, index in _STAT_INDEX.items()})


def format_results_table(results):
    """Two text lines: the COCO figures' names and their values ('-' where NaN)."""
    names = [_LABELS[name] for name in _STAT_INDEX]
    values = ['-' if np.isnan(getattr(results, name)) else '%.4f' % getattr(results, name) for name in _STAT_INDEX]
    widths = [max(len(name), 6) for name in names]
    return '\n'.join(['COCO ' + ' '.join('%*s' % (width, name) for width, name in zip(widths, names)),
                      '     ' + ' '.join('%*s' % (width, value) for width, value in zip(widths, values))])


def results_as_dict(results):
    """JSON-ready {'ap', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large', 'ar100'}; NaN becomes None."""
    return {name: None if np.isnan(value) else value for name, value in dataclasses.asdict(results).items()}
