"""utils/eval_plots.py: pr_curves data against hand-counted values, PNG files opened and their colours checked."""
import dataclasses
import glob
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow.compat.v1 as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from utils import eval_plots
from utils.voc_matching import Detections, GroundTruth, match_detections

CLASS_NAMES = ['none', 'can', 'box']
# Scores .9 (TP), .8 (FP), .3 (TP) of a class with three ground truths.
CURVE = eval_plots.ClassCurve('can', 1, np.array([0.9, 0.8, 0.3]), np.array([True, False, True]), 3)
# By hand at thresholds 0, .1, ..., 1: rows TP, FP, TN, FN, precision, recall.
EXPECTED_COUNTS = np.array([
    [2] * 4 + [1] * 6 + [0],
    [1] * 4 + [1] * 5 + [0] * 2,
    [0] * 11,
    [1] * 4 + [2] * 6 + [3],
    [2 / 3] * 4 + [1 / 2] * 5 + [1, 0],
    [2 / 3] * 4 + [1 / 3] * 6 + [0],
])


def test_pr_curve_counts_hand_computed():
    np.testing.assert_allclose(eval_plots.pr_curve_counts(CURVE, num_thresholds=11), EXPECTED_COUNTS, rtol=1e-6)


def _pr_curve_plugin_data_class():
    """PrCurvePluginData as TensorBoard's plugin_data.proto declares it: int32 version = 1; uint32 num_thresholds = 2."""
    proto = descriptor_pb2.FileDescriptorProto(name='test_pr_curve_plugin_data.proto', package='test_eval_plots',
                                               syntax='proto3')
    message = proto.message_type.add(name='PrCurvePluginData')
    message.field.add(name='version', number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    message.field.add(name='num_thresholds', number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName('test_eval_plots.PrCurvePluginData'))


def test_pr_curves_event_file_holds_tensorboard_plugin_data(tmp_path):
    eval_plots.write_pr_curves(str(tmp_path), [CURVE], step=7)
    [event_file] = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
    values = [(event.step, value) for event in tf.train.summary_iterator(event_file) for value in event.summary.value]
    [(step, value)] = values
    assert step == 7 and value.tag == 'PR/can/pr_curves'
    assert value.metadata.plugin_data.plugin_name == 'pr_curves'
    plugin_data = _pr_curve_plugin_data_class().FromString(value.metadata.plugin_data.content)
    assert plugin_data.version == 0 and plugin_data.num_thresholds == eval_plots.PR_CURVE_THRESHOLDS
    counts = tf.make_ndarray(value.tensor)
    assert counts.shape == (6, eval_plots.PR_CURVE_THRESHOLDS) and counts.dtype == np.float32
    np.testing.assert_allclose(counts[:, ::10], EXPECTED_COUNTS, rtol=1e-6)   # thresholds 0, .1, ..., 1


def _case():
    """Three 120 x 160 images on a blue background: a TP, a FP, a ground truth found only below the drawing
    threshold (missed), a difficult box hit (not drawn) and an image with nothing."""
    gt_boxes = [[0.1, 0.1, 0.5, 0.4], [0.5, 0.5, 0.9, 0.9], [0.2, 0.6, 0.6, 0.9]]
    ground_truth = GroundTruth([0, 1, 1], [1, 2, 1], np.array(gt_boxes), [0, 0, 1])
    det_boxes = [gt_boxes[0], [0.6, 0.1, 0.9, 0.4], gt_boxes[1], gt_boxes[2]]
    detections = Detections([0, 0, 1, 1], [1, 1, 2, 1], [0.9, 0.7, 0.1, 0.8], np.array(det_boxes))
    images = [np.full((120, 160, 3), (40, 60, 160), np.uint8) for _ in range(3)]
    return images, (detections, ground_truth, match_detections(detections, ground_truth, len(CLASS_NAMES)))


def test_class_curves_leave_out_ignored_detections():
    _, (detections, _, matches) = _case()
    curves = eval_plots.class_curves(detections, matches, CLASS_NAMES)
    assert [(c.name, c.num_gt, c.scores.tolist(), c.true_positive.tolist(), c.num_ignored) for c in curves] == [
        ('can', 1, [0.9, 0.7], [True, False], 1), ('box', 1, [0.1], [True], 0)]


def test_curve_title_names_the_detections_left_out_for_difficult_objects():
    """results.json's num_detections counts the can on the difficult box: the title says why the curve has one
    fewer. Both curves reach recall 1 at precision 1 first (the can's FP scores below its TP): AP 1 by both rules."""
    _, (detections, _, matches) = _case()
    assert [eval_plots.curve_title(curve) for curve in eval_plots.class_curves(detections, matches, CLASS_NAMES)] == [
        ['can: AP07 1.0000  AP10 1.0000', '1 GT, 2 detections counted, 1 on difficult objects ignored'],
        ['box: AP07 1.0000  AP10 1.0000', '1 GT, 1 detection']]


def test_pr_curve_pngs_have_their_size_and_curve(tmp_path):
    _, (detections, _, matches) = _case()
    paths = eval_plots.save_pr_curve_pngs(str(tmp_path / 'plots'), eval_plots.class_curves(detections, matches,
                                                                                          CLASS_NAMES))
    assert sorted(p.rsplit('/', 1)[1] for p in paths) == ['pr_box.png', 'pr_can.png']
    for path in paths:
        with Image.open(path) as picture:
            assert picture.size == (480, 400)
            assert eval_plots.CURVE_COLOUR in {colour for _, colour in picture.convert('RGB').getcolors(1 << 16)}


def test_classes_whose_file_names_coincide_get_one_png_each(tmp_path):
    """'Coke Can' and 'Coke_Can' both become pr_Coke_Can; 'coke_can' is the same file where case is ignored."""
    curves = [dataclasses.replace(CURVE, name=name) for name in ('Coke Can', 'Coke_Can', 'coke_can', 'box')]
    paths = eval_plots.save_pr_curve_pngs(str(tmp_path), curves)
    assert [os.path.basename(path) for path in paths] == ['pr_Coke_Can.png', 'pr_Coke_Can_2.png', 'pr_coke_can_3.png',
                                                          'pr_box.png']
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(path) for path in paths)


def test_non_ascii_class_names_keep_their_letters_in_file_names(tmp_path):
    """Accented, Cyrillic and Chinese names stay readable (and distinct); only the apostrophe and space go."""
    curves = [dataclasses.replace(CURVE, name=name) for name in ("Müsli d'or", '生抽酱油', 'пиво', '可乐', 'हिन्दी')]
    paths = eval_plots.save_pr_curve_pngs(str(tmp_path), curves)
    assert [os.path.basename(path) for path in paths] == ['pr_Müsli_d_or.png', 'pr_生抽酱油.png', 'pr_пиво.png',
                                                          'pr_可乐.png', 'pr_हिन्दी.png']   # vowel signs kept
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(path) for path in paths)


def _colour_at(grid, image_index, box, columns, cell=(160, 120)):
    """Colour of the grid pixel on the middle of a box's left edge (normalised yxyx) in an image's cell."""
    x = (image_index % columns) * cell[0] + round(box[1] * cell[0])
    y = (image_index // columns) * cell[1] + round((box[0] + box[2]) / 2 * cell[1])
    return grid.getpixel((x, y))


def test_detection_grid_shows_each_kind_in_its_colour(tmp_path):
    images, evaluated = _case()
    pictures = eval_plots.pictures_of(images, evaluated, CLASS_NAMES, score_threshold=0.5)
    assert [p.kinds for p in pictures] == [['tp', 'fp'], ['missed'], []]
    path = eval_plots.save_detection_grid(str(tmp_path / 'plots' / 'detections.png'), pictures, columns=2)
    with Image.open(path) as grid:
        grid = grid.convert('RGB')
        assert grid.size == (2 * 160, 2 * 120)
        detections, ground_truth, _ = evaluated
        assert _colour_at(grid, 0, detections.boxes[0], 2) == eval_plots.TP_COLOUR
        assert _colour_at(grid, 0, detections.boxes[1], 2) == eval_plots.FP_COLOUR
        assert _colour_at(grid, 1, ground_truth.boxes[1], 2) == eval_plots.MISSED_COLOUR
        # The difficult box and the detection that took it are not drawn: the background stays.
        assert _colour_at(grid, 1, ground_truth.boxes[2], 2) == (40, 60, 160)
        colours = {colour for _, colour in grid.getcolors(1 << 20)}
        assert {eval_plots.TP_COLOUR, eval_plots.FP_COLOUR, eval_plots.MISSED_COLOUR} <= colours


def test_caption_of_a_nested_false_positive_is_not_hidden_under_the_true_positive():
    # The FP's top edge is row 50 (0.42 x 120), its left column 35; the TP's caption sits above the TP (rows up
    # to 48), so the FP's moves just inside its own top edge, where only a caption can put its colour.
    picture = eval_plots.Picture(np.zeros((120, 160, 3), np.uint8), np.array([[0.4, 0.2, 0.9, 0.8],
                                                                              [0.42, 0.22, 0.95, 0.85]]),
                                 ['tp', 'fp'], ['can 0.90', 'can 0.60'])
    drawn = np.asarray(eval_plots.draw_picture(picture)).astype(int)

    def tinted(region, colour):   # glyphs are anti-aliased: the colour's channel leads, the others stay low
        lead = int(np.argmax(colour))
        others = [c for c in range(3) if c != lead]
        return bool(np.any((region[..., lead] > 80) & np.all(region[..., others] < 40, axis=-1)))
    assert tinted(drawn[53:62, 40:80], eval_plots.FP_COLOUR)
    assert tinted(drawn[30:48, 30:80], eval_plots.TP_COLOUR)


def test_empty_grid_is_refused(tmp_path):
    with pytest.raises(ValueError, match='no pictures'):
        eval_plots.save_detection_grid(str(tmp_path / 'grid.png'), [])
