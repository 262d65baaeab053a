"""utils/visualization.py: box colours land where the boxes are, labels stay inside the image."""
import numpy as np
import pytest
from PIL import Image
import tensorflow.compat.v1 as tf

from utils import visualization

GREY = (90, 90, 90)


def _grey(height, width):
    return Image.new('RGB', (width, height), GREY)


def _has_colour(pixels, colour):
    return bool(np.any(np.all(pixels == np.array(colour, np.uint8), axis=-1)))


def test_palette_colours_are_distinct_and_wrap():
    assert len(set(visualization.PALETTE)) == len(visualization.PALETTE) == 20
    assert visualization.class_colour(1) != visualization.class_colour(2)
    assert visualization.class_colour(21) == visualization.class_colour(1)


def test_boxes_to_pixels_scales_by_height_and_width():
    pixels = visualization.boxes_to_pixels([[0.1, 0.2, 0.5, 1.0]], height=200, width=400)
    np.testing.assert_allclose(pixels, [[20.0, 80.0, 100.0, 400.0]])


def test_box_outline_has_class_colour_at_its_edges_only():
    height, width = 300, 400
    box = [0.4, 0.25, 0.8, 0.75]                         # pixels: rows 120..240, columns 100..300
    picture = np.asarray(visualization.draw_detections(_grey(height, width), [box], [3], [0.9], ['bg', 'a', 'b', 'c']))
    colour = visualization.class_colour(3)
    # Left and right edges, away from the label (which sits above the top edge).
    assert _has_colour(picture[180, 98:103], colour)
    assert _has_colour(picture[180, 297:302], colour)
    assert _has_colour(picture[238:243, 200], colour)
    # Inside and far outside the box the image is unchanged.
    np.testing.assert_array_equal(picture[180, 150], GREY)
    np.testing.assert_array_equal(picture[280, 50], GREY)
    # The label sits directly above the box, filled with the class colour.
    assert _has_colour(picture[105:120, 100:140], colour)


def test_two_classes_get_two_colours():
    boxes = [[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]]
    picture = np.asarray(visualization.draw_detections(_grey(300, 300), boxes, [1, 2], [0.8, 0.7]))
    assert _has_colour(picture[75, 28:33], visualization.class_colour(1))
    assert _has_colour(picture[225, 178:183], visualization.class_colour(2))
    assert not _has_colour(picture[225, 178:183], visualization.class_colour(1))


@pytest.mark.parametrize('box', [
    [0.0, 0.0, 0.3, 0.3],        # top-left corner: no room above
    [0.0, 0.85, 0.2, 1.0],       # top-right corner: label would run off the right side
    [0.95, 0.9, 1.0, 1.0],       # bottom-right corner, tiny box
    [-0.2, -0.2, 1.2, 1.2],      # box larger than the image
])
def test_label_stays_inside_image_at_borders(box):
    height, width = 120, 160
    text_width, text_height = 90, 14
    pixels = visualization.boxes_to_pixels([box], height, width)[0]
    x, y = visualization.label_position(pixels, (text_width, text_height), (width, height))
    assert 0 <= x and x + text_width <= width
    assert 0 <= y and y + text_height <= height


def test_label_goes_above_box_when_there_is_room():
    x, y = visualization.label_position(np.array([50.0, 20.0, 90.0, 60.0]), (30, 12), (200, 100))
    assert (x, y) == (20, 38)


def test_label_positions_move_a_label_that_a_more_important_one_covers():
    # The first box's label goes above it: x 20, y 50 - 12. The second's place above (22, 40) would share
    # 28 x 10 pixels with it, so it goes just inside its own top edge, y 52.
    boxes = [np.array([50.0, 20.0, 90.0, 60.0]), np.array([52.0, 22.0, 95.0, 70.0])]
    assert visualization.label_positions(boxes, [(30, 12)] * 2, (200, 100)) == [(20, 38), (22, 52)]


def test_label_positions_leave_labels_that_do_not_meet_where_label_position_puts_them():
    boxes = [np.array([50.0, 20.0, 90.0, 60.0]), np.array([50.0, 120.0, 90.0, 160.0])]
    assert visualization.label_positions(boxes, [(30, 12)] * 2, (200, 100)) == [(20, 38), (120, 38)]


def test_label_positions_take_the_first_free_place_else_the_least_covered():
    # Labels as wide as the image. The first box's goes above it, rows 0..20. The second box (rows 10..24) has
    # no room above, and just inside its top edge (rows 10..30) meets that label; below it (rows 24..44) is free.
    boxes = [np.array([20.0, 0.0, 60.0, 100.0]), np.array([10.0, 0.0, 24.0, 100.0])]
    assert visualization.label_positions(boxes, [(100, 20)] * 2, (100, 100)) == [(0, 0), (0, 24)]
    # In a 100 x 30 image the places are clamped to rows 0..20 (above), 10..30 (inside the top, below) and
    # 4..24 (inside the bottom): they meet the first label on 20, 10, 10 and 16 rows; the first least is taken.
    boxes = [np.array([20.0, 0.0, 24.0, 100.0])] * 2
    assert visualization.label_positions(boxes, [(100, 20)] * 2, (100, 30)) == [(0, 0), (0, 10)]


def test_drawn_label_of_a_nested_box_is_not_hidden_under_the_higher_score():
    height, width = 300, 400
    boxes = [[0.4, 0.25, 0.8, 0.75], [0.42, 0.26, 0.85, 0.8]]   # the second's top edge at row 126, x from 104
    picture = np.asarray(visualization.draw_detections(_grey(height, width), boxes, [3, 1], [0.9, 0.5]))
    # The higher score's label sits above its box (rows up to 120); the other's moved inside its box.
    assert _has_colour(picture[105:120, 100:140], visualization.class_colour(3))
    assert _has_colour(picture[132, 106:126], visualization.class_colour(1))


def test_drawn_label_at_right_border_is_visible():
    height, width = 100, 100
    picture = np.asarray(visualization.draw_detections(
        _grey(height, width), [[0.0, 0.9, 0.3, 1.0]], [5], [0.99], ['bg', 'a', 'b', 'c', 'd', 'a long class name']))
    colour = visualization.class_colour(5)
    # The label background reaches the right edge rather than being cut off beyond it.
    assert _has_colour(picture[:, width - 1], colour)
    columns = np.flatnonzero(np.all(picture == np.array(colour, np.uint8), axis=-1).any(axis=0))
    assert columns.min() < 60   # the label was shifted left into the image


def test_font_and_lines_grow_with_image_size():
    small_line, small_font = visualization.drawing_sizes(300, 300)
    big_line, big_font = visualization.drawing_sizes(1200, 1600)
    assert big_font > small_font and big_line > small_line


def test_accepts_grayscale_and_array_input():
    gray = Image.new('L', (64, 48), 100)
    assert visualization.draw_detections(gray, [[0.1, 0.1, 0.9, 0.9]], [1], None).mode == 'RGB'
    array = np.zeros((48, 64, 3), np.uint8)
    assert visualization.draw_detections(array, np.zeros((0, 4)), [], []).size == (64, 48)


def test_graph_draws_true_and_confident_predicted_boxes_only():
    images = np.full((1, 40, 40, 3), 127.5, np.float32)
    gt_boxes = np.array([[[0.1, 0.1, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0]]], np.float32)   # second row is padding
    det_boxes = np.array([[[0.5, 0.5, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    det_scores = np.array([[0.9, 0.0]], np.float32)
    with tf.Graph().as_default(), tf.Session() as session:
        drawn = session.run(visualization.draw_boxes_graph(
            tf.constant(images), tf.constant(det_boxes), tf.constant(det_scores), tf.constant(gt_boxes),
            tf.constant([1]), score_threshold=0.5))[0]
    green, red, grey = [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]
    np.testing.assert_allclose(drawn[int(0.1 * 39), 10], green)        # top edge of the true box
    np.testing.assert_allclose(drawn[int(0.7 * 39), int(0.5 * 39)], red)  # left edge of the predicted box
    np.testing.assert_allclose(drawn[0, 0], grey)                        # padded rows draw nothing
    np.testing.assert_allclose(drawn[20, 20], grey)
