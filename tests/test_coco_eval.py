"""utils/coco_eval.py against COCO figures computed by hand (IoU thresholds .5:.05:.95, 101 recall levels)."""
import json
import math

import numpy as np
import pytest

from utils import coco_eval
from utils.voc_matching import Detections, GroundTruth

NUM_CLASSES = 3
# Image 0 is 400 x 800 (height x width), image 1 is 200 x 200.
IMAGE_SIZES = np.array([[400, 800], [200, 200]])


def _pixels_to_normalised(image, ymin, xmin, ymax, xmax):
    height, width = IMAGE_SIZES[image]
    return [ymin / height, xmin / width, ymax / height, xmax / width]


def _evaluate(dets, gts):
    """dets: (image, class, score, pixel yxyx); gts: (image, class, pixel yxyx, difficult)."""
    detections = Detections([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets],
                            np.array([_pixels_to_normalised(d[0], *d[3]) for d in dets]).reshape(-1, 4))
    ground_truth = GroundTruth([g[0] for g in gts], [g[1] for g in gts],
                               np.array([_pixels_to_normalised(g[0], *g[2]) for g in gts]).reshape(-1, 4),
                               [g[3] for g in gts])
    return coco_eval.evaluate(detections, ground_truth, IMAGE_SIZES, NUM_CLASSES)


def test_boxes_to_pixel_xywh_scales_y_by_height_and_x_by_width():
    xywh = coco_eval.boxes_to_pixel_xywh([[0.25, 0.125, 0.5, 0.25]], [400], [800])
    np.testing.assert_allclose(xywh, [[100, 100, 100, 100]])


# Ground truth: a 100 x 100 px box in image 0 (area 10000: large) and a 50 x 50 px one in image 1 (medium).
# Detections: a 40 x 40 FP (score .95), one inside the large box (100 x 82 px, IoU .82, score .9), one inside
# the medium box (50 x 31 px, IoU .62, score .8). Detection areas 1600, 8200, 1550: all medium.
HAND_GTS = [(0, 1, (100, 100, 200, 200), 0), (1, 1, (100, 100, 150, 150), 0)]
HAND_DETS = [(1, 1, 0.95, (0, 0, 40, 40)), (0, 1, 0.9, (100, 100, 200, 182)), (1, 1, 0.8, (100, 100, 150, 131))]


def test_hand_computed_two_images():
    results = _evaluate(HAND_DETS, HAND_GTS)
    # IoU .5, .55, .6: FP, TP, TP -> precision 0, 1/2, 2/3 at recall 0, .5, 1; the envelope is 2/3 everywhere.
    assert results.ap50 == pytest.approx(2 / 3)
    # IoU .65 ... .8: FP, TP, FP -> recall .5 at most with envelope 1/2: 51 of the 101 levels (0, .01, ..., .5).
    assert results.ap75 == pytest.approx(51 * 0.5 / 101)
    # IoU .85 ... .95: no TP.
    assert results.ap == pytest.approx((3 * 2 / 3 + 4 * 51 * 0.5 / 101) / 10)
    assert results.ar100 == pytest.approx((3 * 1.0 + 4 * 0.5) / 10)
    assert math.isnan(results.ap_small)   # no ground truth under 32 x 32
    # Medium: the large box and the detection on it are ignored -> FP, TP at IoU <= .6 (AP 1/2), then nothing.
    assert results.ap_medium == pytest.approx(3 * 0.5 / 10)
    # Large: only the large box counts; detections of other areas that match nothing are ignored -> AP 1
    # while the .82 overlap passes the threshold (.5 ... .8), 0 after.
    assert results.ap_large == pytest.approx(7 / 10)


def test_difficult_boxes_are_neither_true_nor_false_positives():
    # Two normal boxes (one never detected) and a difficult one hit twice by the top-scored detections.
    gts = [(1, 2, (10, 10, 60, 60), 0), (1, 2, (120, 120, 170, 170), 0), (0, 2, (100, 300, 200, 400), 1)]
    dets = [(0, 2, 0.9, (100, 300, 200, 400)), (0, 2, 0.85, (100, 305, 200, 400)), (1, 2, 0.8, (10, 10, 60, 60))]
    results = _evaluate(dets, gts)
    # Ignored: one TP, recall 1/2 at precision 1 -> 51 levels of 101. (As FPs: 51 * 1/3 / 101; as a normal box:
    # recall 2/3 -> 67 levels.)
    assert results.ap50 == pytest.approx(51 / 101)
    assert results.ar100 == pytest.approx(0.5)


def test_no_detections_gives_zero():
    detections = Detections(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))
    ground_truth = GroundTruth([0], [1], [_pixels_to_normalised(0, 100, 100, 200, 200)], [0])
    results = coco_eval.evaluate(detections, ground_truth, IMAGE_SIZES, NUM_CLASSES)
    assert results.ap == 0.0 and results.ar100 == 0.0


def test_table_and_json():
    results = _evaluate(HAND_DETS, HAND_GTS)
    header, values = coco_eval.format_results_table(results).splitlines()
    assert header.split() == ['COCO', 'AP@[.5:.95]', 'AP50', 'AP75', 'AP', 'small', 'AP', 'medium', 'AP', 'large',
                              'AR@100']
    assert values.split()[1] == '0.6667' and values.split()[3] == '-'
    summary = json.loads(json.dumps(coco_eval.results_as_dict(results)))
    assert summary['ap_small'] is None and summary['ap50'] == pytest.approx(2 / 3)
