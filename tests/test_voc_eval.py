"""utils/voc_eval.py against hand-computed cases and a brute-force reference written from the VOC definition."""
import json
import math

import numpy as np
import pytest

from utils import voc_eval

NUM_CLASSES = 4  # background + 3


def _box(cy, cx, size=0.2):
    return [cy - size / 2, cx - size / 2, cy + size / 2, cx + size / 2]


def _evaluate(dets, gts, num_classes=NUM_CLASSES, iou_threshold=0.5):
    """dets: list of (image, class, score, box); gts: list of (image, class, box, difficult)."""
    det_cols = list(zip(*dets)) if dets else [[], [], [], np.zeros((0, 4))]
    gt_cols = list(zip(*gts)) if gts else [[], [], np.zeros((0, 4)), []]
    return voc_eval.evaluate(voc_eval.Detections(*det_cols), voc_eval.GroundTruth(*gt_cols), num_classes,
                             iou_threshold)


# ---------------------------------------------------------------- brute-force reference (plain Python loops)

def _ref_iou(a, b):
    ih = min(a[2], b[2]) - max(a[0], b[0])
    iw = min(a[3], b[3]) - max(a[1], b[1])
    if ih <= 0 or iw <= 0:
        return 0.0
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _py_faster_rcnn_ap07(rec, prec):
    """VOC07 11-point AP as published in py-faster-rcnn's voc_eval.py (voc_ap with use_07_metric=True)."""
    ap = 0.
    for t in np.arange(0., 1.1, 0.1):
        if np.sum(rec >= t) == 0:
            p = 0
        else:
            p = np.max(prec[rec >= t])
        ap = ap + p / 11.
    return ap


def _ref_class_ap(dets, gts, class_id, threshold):
    """(ap07, ap10, npos) for one class, straight from the devkit's loop; None APs when npos == 0."""
    class_dets = sorted([d for d in dets if d[1] == class_id], key=lambda d: -d[2])  # sorted() is stable
    class_gts = [g for g in gts if g[1] == class_id]
    npos = sum(1 for g in class_gts if not g[3])
    taken = set()
    flags = []  # 'tp' / 'fp' per non-ignored detection
    for image, _, _, box in class_dets:
        best, best_j = -math.inf, None
        for j, g in enumerate(class_gts):
            if g[0] != image:
                continue
            overlap = _ref_iou(box, g[2])
            if overlap > best:
                best, best_j = overlap, j
        if best_j is not None and best >= threshold:
            if class_gts[best_j][3]:
                continue
            if best_j in taken:
                flags.append('fp')
            else:
                taken.add(best_j)
                flags.append('tp')
        else:
            flags.append('fp')
    if npos == 0:
        return None, None, 0
    recall, precision, tp = [], [], 0
    for rank, flag in enumerate(flags, start=1):
        tp += flag == 'tp'
        recall.append(tp / npos)
        precision.append(tp / rank)
    ap07 = _py_faster_rcnn_ap07(np.array(recall), np.array(precision))
    # Area: each rise of recall to level r earns (r - previous level) * best precision at recall >= r.
    ap10, previous = 0.0, 0.0
    for level in sorted(set(recall)):
        ap10 += (level - previous) * max(p for r, p in zip(recall, precision) if r >= level)
        previous = level
    return ap07, ap10, npos


def _random_case(rng, num_images, num_classes):
    gts, dets = [], []
    for image in range(num_images):
        for _ in range(rng.integers(0, 5)):
            cy, cx, size = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.4)
            gts.append((image, int(rng.integers(1, num_classes)), _box(cy, cx, size), bool(rng.uniform() < 0.2)))
        image_gts = [g for g in gts if g[0] == image]
        for _ in range(rng.integers(0, 8)):
            if image_gts and rng.uniform() < 0.7:
                source = image_gts[rng.integers(len(image_gts))]
                box = list(np.asarray(source[2]) + rng.normal(0, 0.04, 4))
                class_id = source[1] if rng.uniform() < 0.8 else int(rng.integers(1, num_classes))
            else:
                box = _box(rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.4))
                class_id = int(rng.integers(1, num_classes))
            score = float(rng.integers(0, 6)) / 5  # few distinct values: many ties
            dets.append((image, class_id, score, box))
    return dets, gts


@pytest.mark.parametrize('seed', range(40))
def test_matches_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 6))
    dets, gts = _random_case(rng, int(rng.integers(1, 12)), num_classes)
    threshold = float(rng.choice([0.3, 0.5, 0.7]))
    results = _evaluate(dets, gts, num_classes=num_classes, iou_threshold=threshold)
    expected_07 = []
    for class_id in range(1, num_classes):
        ap07, ap10, npos = _ref_class_ap(dets, gts, class_id, threshold)
        assert results.num_gt[class_id] == npos
        if npos == 0:
            assert math.isnan(results.ap07[class_id]) and math.isnan(results.ap10[class_id])
        else:
            assert results.ap07[class_id] == pytest.approx(ap07, abs=1e-12)
            assert results.ap10[class_id] == pytest.approx(ap10, abs=1e-12)
            expected_07.append(ap07)
    if expected_07:
        assert results.map07 == pytest.approx(sum(expected_07) / len(expected_07), abs=1e-12)
    else:
        assert math.isnan(results.map07)


# ---------------------------------------------------------------- hand-computed cases

def test_perfect_detection_gives_ap_one():
    gts = [(0, 1, _box(0.3, 0.3), 0), (0, 2, _box(0.6, 0.6), 0), (1, 1, _box(0.5, 0.5), 0),
           (2, 3, _box(0.4, 0.7, 0.3), 0)]
    dets = [(g[0], g[1], 0.9, g[2]) for g in gts]
    results = _evaluate(dets, gts)
    np.testing.assert_array_equal(results.ap07[1:], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(results.ap10[1:], [1.0, 1.0, 1.0])
    assert results.map07 == 1.0 and results.map10 == 1.0


def test_evaluator_perfect_detection_with_padding():
    """Ground truth fed as detections through the batch accumulator (padded rows must be skipped)."""
    gt_boxes = np.zeros((2, 3, 4), np.float32)
    gt_boxes[0, :2] = [_box(0.3, 0.3), _box(0.7, 0.7)]
    gt_boxes[1, :1] = [_box(0.5, 0.5)]
    gt_labels = np.array([[1, 2, 0], [3, 0, 0]])
    num_boxes = np.array([2, 1])
    evaluator = voc_eval.VOCEvaluator(NUM_CLASSES)
    padded_dets = np.concatenate([gt_boxes, np.full((2, 2, 4), 0.5, np.float32)], axis=1)  # 5 rows, junk tail
    scores = np.full((2, 5), 0.8, np.float32)
    classes = np.concatenate([gt_labels, np.ones((2, 2), np.int64)], axis=1)
    evaluator.add_batch(padded_dets, scores, classes, num_boxes, gt_boxes, gt_labels, np.zeros((2, 3)), num_boxes)
    results = evaluator.compute()
    assert evaluator.num_images == 2
    np.testing.assert_array_equal(results.num_gt, [0, 1, 1, 1])
    assert results.map07 == 1.0 and results.map10 == 1.0


def test_eleven_point_and_area_differ_as_hand_computed():
    # Two ground truths; detections TP, FP, TP -> recall .5 .5 1, precision 1 .5 2/3.
    gts = [(0, 1, _box(0.3, 0.3), 0), (1, 1, _box(0.6, 0.6), 0)]
    dets = [(0, 1, 0.9, _box(0.3, 0.3)), (0, 1, 0.8, _box(0.8, 0.8)), (1, 1, 0.7, _box(0.6, 0.6))]
    results = _evaluate(dets, gts)
    assert results.ap10[1] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)          # 5/6
    assert results.ap07[1] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)       # 28/33
    assert results.ap07[1] != pytest.approx(results.ap10[1])


def test_recall_and_the_operating_point_as_hand_computed():
    # Three ground truths; detections .9 TP, .8 FP, .3 TP: 2 of 3 found in all; at >= .5, 1 TP of 2 detections.
    gts = [(0, 1, _box(0.3, 0.3), 0), (1, 1, _box(0.6, 0.6), 0), (2, 1, _box(0.5, 0.5), 0)]
    dets = [(0, 1, 0.9, _box(0.3, 0.3)), (0, 1, 0.8, _box(0.8, 0.8)), (1, 1, 0.3, _box(0.6, 0.6)),
            (2, 2, 0.2, _box(0.5, 0.5))]    # a class without ground truth
    results = _evaluate(dets, gts)
    assert results.recall[1] == pytest.approx(2 / 3) and results.operating_score == 0.5
    assert results.recall_at_score[1] == pytest.approx(1 / 3) and results.precision_at_score[1] == 0.5
    assert np.isnan(results.recall[2]) and np.isnan(results.precision_at_score[2])
    low = _evaluate([(0, 1, 0.3, _box(0.3, 0.3))], gts[:1])     # nothing scores 0.5: no precision at it
    assert low.recall[1] == 1.0 and low.recall_at_score[1] == 0.0 and np.isnan(low.precision_at_score[1])


def test_duplicates_are_false_positives():
    # Second detection of the same box is FP: same curve as TP, FP, TP.
    gts = [(0, 1, _box(0.3, 0.3), 0), (0, 1, _box(0.7, 0.7), 0)]
    dets = [(0, 1, 0.9, _box(0.3, 0.3)), (0, 1, 0.8, _box(0.31, 0.3)), (0, 1, 0.7, _box(0.7, 0.7))]
    results = _evaluate(dets, gts)
    assert results.ap10[1] == pytest.approx(5 / 6)


def test_duplicate_of_taken_box_is_fp_even_if_another_box_overlaps():
    # VOC devkit: a detection goes to its best-IoU ground truth; if that one is taken it is FP,
    # although it overlaps a second, free ground truth by more than 0.5.
    gt_a, gt_b = [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.8]
    det = [0.0, 0.0, 1.0, 0.95]          # IoU 0.95 with a, 0.8/0.95 = 0.84 with b
    results = _evaluate([(0, 1, 0.9, gt_a), (0, 1, 0.8, det)], [(0, 1, gt_a, 0), (0, 1, gt_b, 0)])
    # TP then FP: recall .5 .5, precision 1 .5 -> area 0.5, 11-point 6/11.
    assert results.ap10[1] == pytest.approx(0.5)
    assert results.ap07[1] == pytest.approx(6 / 11)


def test_difficult_ground_truth_is_ignored():
    gts = [(0, 1, _box(0.3, 0.3), 0), (0, 1, _box(0.7, 0.7), 1)]
    # The top detection hits the difficult box: neither TP nor FP; recall counts only the normal box.
    dets = [(0, 1, 0.9, _box(0.7, 0.7)), (0, 1, 0.8, _box(0.3, 0.3)), (0, 1, 0.7, _box(0.7, 0.71))]
    results = _evaluate(dets, gts)
    assert results.num_gt[1] == 1
    assert results.ap07[1] == 1.0 and results.ap10[1] == 1.0


def test_class_with_only_difficult_ground_truth_has_no_gt():
    results = _evaluate([(0, 2, 0.9, _box(0.5, 0.5))], [(0, 1, _box(0.3, 0.3), 0), (0, 2, _box(0.5, 0.5), 1)])
    assert results.num_gt[2] == 0 and math.isnan(results.ap10[2])
    assert results.map10 == 0.0  # class 1 has GT and no detection -> AP 0; class 2, 3 left out


def test_ties_keep_input_order():
    gts = [(0, 1, _box(0.3, 0.3), 0)]
    hit, miss = (0, 1, 0.5, _box(0.3, 0.3)), (0, 1, 0.5, _box(0.8, 0.8))
    assert _evaluate([hit, miss], gts).ap10[1] == 1.0
    # FP first: recall 0, 1 with precision 0, 1/2 -> area 0.5; every 11-point level sees precision 0.5.
    swapped = _evaluate([miss, hit], gts)
    assert swapped.ap10[1] == pytest.approx(0.5)
    assert swapped.ap07[1] == pytest.approx(0.5)


def test_iou_threshold_is_inclusive():
    # IoU exactly 0.5: intersection 0.5, union 1.
    results = _evaluate([(0, 1, 0.9, [0.0, 0.0, 0.5, 1.0])], [(0, 1, [0.0, 0.0, 1.0, 1.0], 0)])
    assert results.ap10[1] == 1.0


def test_detection_of_wrong_class_or_image_is_false_positive():
    gts = [(0, 1, _box(0.3, 0.3), 0), (1, 2, _box(0.5, 0.5), 0)]
    dets = [(0, 2, 0.9, _box(0.3, 0.3)), (1, 1, 0.9, _box(0.5, 0.5)), ('other', 1, 0.8, _box(0.3, 0.3))]
    results = _evaluate(dets, gts)
    assert results.ap10[1] == 0.0 and results.ap10[2] == 0.0
    assert math.isnan(results.ap10[3]) and results.map10 == 0.0


def test_no_detections_gives_zero_and_no_ground_truth_gives_nan():
    results = _evaluate([], [(0, 1, _box(0.3, 0.3), 0)])
    assert results.ap07[1] == 0.0 and results.ap10[1] == 0.0
    assert math.isnan(results.ap07[2]) and not results.has_gt[2] and results.has_gt[1]
    assert results.map07 == 0.0
    assert math.isnan(_evaluate([], []).map10)


def test_string_image_ids_are_accepted():
    gts = [('a.jpg', 1, _box(0.3, 0.3), 0), ('b.jpg', 1, _box(0.3, 0.3), 0)]
    results = _evaluate([('b.jpg', 1, 0.9, _box(0.3, 0.3))], gts)
    assert results.ap10[1] == pytest.approx(0.5)


def test_bad_class_ids_are_rejected():
    with pytest.raises(ValueError, match='classes must lie in 1..3'):
        _evaluate([(0, 0, 0.9, _box(0.3, 0.3))], [])


@pytest.mark.parametrize('recall, precision, ap07, ap10', [
    ([], [], 0.0, 0.0),
    ([0.3], [1.0], 3 / 11, 0.3),                       # 3/10 reaches 0, .1, .2 but not arange's .3
    ([0.5, 1.0], [1.0, 0.5], (6 + 5 * 0.5) / 11, 0.75),
    ([0.2, 0.4, 0.4], [0.5, 0.4, 1.0], 5 / 11, 0.4),   # envelope lifts the first point to 1.0
])
def test_voc_ap_hand_computed(recall, precision, ap07, ap10):
    assert voc_eval.voc_ap(np.array(recall), np.array(precision), use_07_metric=True) == pytest.approx(ap07)
    assert voc_eval.voc_ap(np.array(recall), np.array(precision), use_07_metric=False) == pytest.approx(ap10)


# Curves whose recall is exactly 3/10, 6/20, 6/10 or 7/10 at a precision peak: the levels where np.arange(0., 1.1,
# 0.1) (0.30000000000000004, 0.6000000000000001, 0.7000000000000001) and exact tenths disagree.
_TENTH_CURVES = {
    '3/10': (np.array([1, 2, 3, 3, 4]) / 10, np.array([1.0, 1.0, 1.0, 0.75, 0.5])),
    '6/20': (np.array([2, 4, 6, 6, 8, 20]) / 20, np.array([1.0, 1.0, 1.0, 0.6, 0.5, 0.4])),
    '7/10 and 6/10': (np.array([6, 7, 7, 10]) / 10, np.array([1.0, 0.9, 0.7, 0.5])),
}


def _exact_tenths_ap07(rec, prec):
    """The rule this module used before: levels k / 10, which 3/10, 6/10, 7/10 reach."""
    return sum(np.max(prec[rec >= k / 10], initial=0.0) for k in range(11)) / 11


@pytest.mark.parametrize('name', sorted(_TENTH_CURVES))
def test_voc07_is_py_faster_rcnn_on_recalls_at_tenths(name):
    recall, precision = _TENTH_CURVES[name]
    expected = _py_faster_rcnn_ap07(recall, precision)
    assert voc_eval.voc_ap(recall, precision, use_07_metric=True) == pytest.approx(expected, abs=1e-15)
    # The old rule gives another AP on these curves (so this test fails with it).
    assert _exact_tenths_ap07(recall, precision) != pytest.approx(expected, abs=1e-3)


def test_voc07_at_recall_three_tenths_from_matching():
    # Ten ground truths, three found first: recall 3/10 = 0.3 does not reach arange's 0.30000000000000004, so
    # levels 0, .1, .2 see precision 1 and .3 sees only the later point (4 TP of 8: precision 1/2).
    gts = [(image, 1, _box(0.5, 0.5), 0) for image in range(10)]
    dets = [(image, 1, 0.9, _box(0.5, 0.5)) for image in range(3)]
    dets += [(image, 1, 0.5, _box(0.1, 0.1)) for image in range(4)] + [(3, 1, 0.4, _box(0.5, 0.5))]
    results = _evaluate(dets, gts)
    assert results.ap07[1] == pytest.approx((3 * 1 + 0.5 + 0.5) / 11)


def test_format_table_lists_classes_and_no_gt():
    results = _evaluate([(0, 1, 0.9, _box(0.3, 0.3))], [(0, 1, _box(0.3, 0.3), 0)])
    table = voc_eval.format_results_table(results, ['none', 'cat', 'dog', 'bird'])
    lines = table.splitlines()
    assert lines[0].split() == ['class', '#GT', 'AP07', 'AP10', 'recall', 'R@0.5', 'P@0.5']
    assert lines[1].split() == ['cat', '1', '1.0000', '1.0000', '1.0000', '1.0000', '1.0000']
    assert lines[2].split() == ['dog', '0', 'no', 'GT']
    assert lines[-1].split() == ['mAP', '1', '1.0000', '1.0000']


def test_format_table_aligns_wide_and_accented_names():
    # A terminal shows each CJK character two columns wide and a combining accent in no column of its own:
    # the widest name, 'café crème' (10 columns), sets the name column, and every row's #GT ends at column 18.
    # Thai's vowel sign U+0E34 (combining class 0, category Mn) takes no column either.
    results = _evaluate([], [(0, c, _box(0.3, 0.3), 0) for c in (1, 2, 3, 4)], num_classes=5)
    table = voc_eval.format_results_table(results, ['none', 'café crème', '生抽酱油', 'pire\u0301e', 'กิน'])
    lines = table.splitlines()
    assert lines[0].startswith('class' + ' ' * 6 + '    #GT')
    assert lines[1].startswith('café crème' + ' ' + '      1')
    assert lines[2].startswith('生抽酱油' + ' ' * 3 + '      1')
    assert lines[3].startswith('pire\u0301e' + ' ' * 6 + '      1')
    assert lines[4].startswith('กิน' + ' ' * 9 + '      1')
    assert lines[5].startswith('mAP' + ' ' * 8 + '      4')


def test_results_as_dict_is_json_ready():
    results = _evaluate([(0, 1, 0.9, _box(0.3, 0.3)), (0, 2, 0.8, _box(0.6, 0.6))], [(0, 1, _box(0.3, 0.3), 0)])
    summary = json.loads(json.dumps(voc_eval.results_as_dict(results, ['none', 'cat', 'dog', 'bird'])))
    assert summary['map_voc07'] == 1.0 and summary['num_classes_with_gt'] == 1
    assert summary['per_class']['cat'] == {'class_id': 1, 'num_gt': 1, 'num_detections': 1, 'ap_voc07': 1.0,
                                           'ap_voc2010': 1.0, 'recall': 1.0, 'recall_at_score': 1.0,
                                           'precision_at_score': 1.0}
    assert summary['operating_score'] == 0.5
    assert summary['per_class']['dog']['ap_voc2010'] is None and summary['per_class']['dog']['num_detections'] == 1


def test_matches_give_each_detection_its_outcome_and_box():
    gts = [(0, 1, _box(0.3, 0.3), 0), (0, 1, _box(0.7, 0.7), 1), (1, 2, _box(0.5, 0.5), 0)]
    dets = [(0, 1, 0.6, _box(0.3, 0.3)),    # TP of ground truth 0
            (0, 1, 0.9, _box(0.7, 0.7)),    # takes the difficult box 1: ignored
            (0, 1, 0.5, _box(0.31, 0.3)),   # duplicate of box 0: FP
            (1, 2, 0.8, _box(0.1, 0.1)),    # misses box 2: FP
            (1, 1, 0.7, _box(0.5, 0.5))]    # right place, wrong class: FP
    detections = voc_eval.Detections(*[np.array(column) for column in zip(*dets)])
    ground_truth = voc_eval.GroundTruth(*[np.array(column) for column in zip(*gts)])
    matches = voc_eval.match_detections(detections, ground_truth, NUM_CLASSES)
    np.testing.assert_array_equal(matches.true_positive, [True, False, False, False, False])
    np.testing.assert_array_equal(matches.ignored, [False, True, False, False, False])
    np.testing.assert_array_equal(matches.gt_index, [0, 1, -1, -1, -1])
    np.testing.assert_array_equal(matches.num_gt, [0, 1, 1, 0])


def test_evaluator_returns_what_it_was_given_flat():
    evaluator = voc_eval.VOCEvaluator(NUM_CLASSES)
    for _ in range(2):
        evaluator.add_batch(np.zeros((1, 2, 4)), np.array([[0.9, 0.1]]), np.array([[1, 2]]), [1],
                            np.zeros((1, 1, 4)), np.array([[3]]), np.array([[1]]), [1])
    np.testing.assert_array_equal(evaluator.detections().image_ids, [0, 1])
    np.testing.assert_array_equal(evaluator.detections().classes, [1, 1])
    np.testing.assert_array_equal(evaluator.ground_truth().classes, [3, 3])
    np.testing.assert_array_equal(evaluator.ground_truth().difficult, [1, 1])


def test_unequal_lengths_are_rejected():
    with pytest.raises(ValueError, match='detection arrays differ in length'):
        voc_eval.evaluate(voc_eval.Detections([0, 1], [1], [0.5], np.zeros((1, 4))),
                          voc_eval.GroundTruth([], [], np.zeros((0, 4)), []), NUM_CLASSES)
