"""Pictures of an evaluation: per-class precision/recall curves (TensorBoard pr_curves data and PNG files) and a
grid of test images with their detections (green: TP, red: FP, grey: ground truth no drawn detection found).

Outcomes are VOC's (utils/voc_matching.py). TensorBoard's pr_curves plugin reads a summary tagged
'<name>/pr_curves' whose tensor is [6, T]: TP, FP, TN, FN, precision, recall at the score thresholds
i / (T - 1); it is written here as a plain tf.Summary proto (the tensorboard package is not a dependency).
Detection has no true negatives (0), and FN counts every ground truth not found at that threshold.
"""
import dataclasses
import os
import re
import unicodedata

import numpy as np
from PIL import Image, ImageDraw, ImageFont
import tensorflow.compat.v1 as tf

from utils import visualization, voc_eval

TP_COLOUR = (0, 255, 0)
FP_COLOUR = (255, 0, 0)
MISSED_COLOUR = (128, 128, 128)
CURVE_COLOUR = (31, 119, 180)
_KIND_COLOURS = {'missed': MISSED_COLOUR, 'fp': FP_COLOUR, 'tp': TP_COLOUR}   # drawing order: TPs on top
_PLUGIN_NAME = 'pr_curves'
PR_CURVE_THRESHOLDS = 101   # above 127 the plugin data varint needs a second byte; 101 gives steps of .01
_PNG_SIZE = (480, 400)      # width, height of a PR curve file
_MARGIN = 48                # pixels around the plot area of a PR curve (axis labels and title)


@dataclasses.dataclass
class ClassCurve:
    """One class's detections that count (not ignored): scores [n], true_positive [n], and its num_gt;
    num_ignored: its detections left out for taking a difficult object."""
    name: str
    class_id: int
    scores: np.ndarray
    true_positive: np.ndarray
    num_gt: int
    num_ignored: int = 0


@dataclasses.dataclass
class Picture:
    """An image uint8 [H, W, 3] and its boxes [n, 4] normalised yxyx, each with a kind ('tp', 'fp', 'missed')
    and a caption."""
    image: np.ndarray
    boxes: np.ndarray
    kinds: list
    captions: list


def class_curves(detections, matches, class_names):
    """ClassCurve of every class with ground truth, from voc_matching's Detections and their Matches."""
    classes = np.asarray(detections.classes).reshape(-1)
    scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
    curves = []
    for class_id in np.flatnonzero(matches.num_gt):
        of_class = classes == class_id
        counted = of_class & ~matches.ignored
        curves.append(ClassCurve(class_names[class_id], int(class_id), scores[counted], matches.true_positive[counted],
                                 int(matches.num_gt[class_id]), int(np.sum(of_class & matches.ignored))))
    return curves


def curve_title(curve):
    """The two title lines of a PR curve: its AP by both VOC rules; its counts, naming the detections on difficult
    objects that the curve leaves out (results.json's num_detections counts them)."""
    recall, precision = voc_eval.precision_recall(curve.scores, curve.true_positive, curve.num_gt)
    counts = '%d GT, %d detection%s' % (curve.num_gt, len(curve.scores), '' if len(curve.scores) == 1 else 's')
    if curve.num_ignored:
        counts += ' counted, %d on difficult objects ignored' % curve.num_ignored
    return ['%s: AP07 %.4f  AP10 %.4f' % (curve.name, voc_eval.voc_ap(recall, precision, True),
                                          voc_eval.voc_ap(recall, precision, False)), counts]


def pr_curve_counts(curve, num_thresholds=PR_CURVE_THRESHOLDS):
    """float32 [6, T] of a ClassCurve: TP, FP, TN (0), FN, precision, recall at scores >= i / (T - 1)."""
    thresholds = np.arange(num_thresholds) / (num_thresholds - 1)
    kept = np.asarray(curve.scores)[None, :] >= thresholds[:, None]            # [T, n]
    hits = np.asarray(curve.true_positive, dtype=bool)[None, :]
    true_positives = np.sum(kept & hits, axis=1)
    false_positives = np.sum(kept & ~hits, axis=1)
    precision = true_positives / np.maximum(true_positives + false_positives, 1)
    recall = true_positives / max(curve.num_gt, 1)
    return np.stack([true_positives, false_positives, np.zeros(num_thresholds), curve.num_gt - true_positives,
                     precision, recall]).astype(np.float32)


def pr_curve_summary(curves, num_thresholds=PR_CURVE_THRESHOLDS):
    """tf.Summary with one pr_curves plugin value per ClassCurve, tagged 'PR/<name>/pr_curves'."""
    # PrCurvePluginData {int32 version = 1; uint32 num_thresholds = 2}: version 0 is the default (not written);
    # field 2 as a varint is tag byte 0x10 and one byte below 128.
    content = bytes([0x10, num_thresholds])
    summary = tf.Summary()
    for curve in curves:
        metadata = tf.SummaryMetadata(display_name=curve.name, plugin_data=tf.SummaryMetadata.PluginData(
            plugin_name=_PLUGIN_NAME, content=content))
        summary.value.add(tag='PR/%s/pr_curves' % curve.name, metadata=metadata,
                          tensor=tf.make_tensor_proto(pr_curve_counts(curve, num_thresholds)))
    return summary


def write_pr_curves(log_dir, curves, step):
    """Writes pr_curve_summary(curves) at `step` to an event file in log_dir."""
    writer = tf.summary.FileWriter(log_dir)
    writer.add_summary(pr_curve_summary(curves), step)
    writer.close()


def _file_name(class_name, taken):
    """'pr_<class name>.png' with the characters file systems object to as '_' (letters and digits of any script
    stay: 'pr_café.png', 'pr_可乐.png'); '_2', '_3', ... after the name when an earlier class took it (or its
    case-insensitive twin), so that 'Coke Can' and 'Coke_Can' both get one."""
    # Marks (the vowel signs of Devanagari, Thai, ...: categories M*) are part of the letters they follow.
    kept = ''.join(char if char.isalnum() or char in '.-_' or unicodedata.category(char).startswith('M') else ' '
                   for char in class_name)
    stem = 'pr_%s' % (re.sub(r' +', '_', kept) or 'class')
    name, copy = stem + '.png', 1
    while name.lower() in taken:
        copy += 1
        name = '%s_%d.png' % (stem, copy)
    taken.add(name.lower())
    return name


def draw_pr_curve(curve):
    """A PIL RGB image of the ClassCurve's precision against recall, titled with its AP by both VOC rules."""
    recall, precision = voc_eval.precision_recall(curve.scores, curve.true_positive, curve.num_gt)
    picture = Image.new('RGB', _PNG_SIZE, 'white')
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=12)
    left, top = _MARGIN, _MARGIN // 2 + 8
    right, bottom = _PNG_SIZE[0] - _MARGIN // 2, _PNG_SIZE[1] - _MARGIN
    for tick in np.linspace(0, 1, 6):
        x, y = left + tick * (right - left), bottom - tick * (bottom - top)
        draw.line([(x, top), (x, bottom)], fill=(225, 225, 225))
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((x, bottom + 4), '%.1f' % tick, fill='black', font=font, anchor='mt')
        draw.text((left - 4, y), '%.1f' % tick, fill='black', font=font, anchor='rm')
    draw.rectangle([left, top, right, bottom], outline='black')
    draw.text(((left + right) / 2, _PNG_SIZE[1] - 6), 'recall', fill='black', font=font, anchor='mb')
    _, _, label_width, label_height = draw.textbbox((0, 0), 'precision', font=font)
    label = Image.new('RGB', (label_width, label_height), 'white')
    ImageDraw.Draw(label).text((0, 0), 'precision', fill='black', font=font)
    picture.paste(label.rotate(90, expand=True), (6, int((top + bottom - label_width) / 2)))
    points = [(left + r * (right - left), bottom - p * (bottom - top)) for r, p in zip(recall, precision)]
    if points:
        draw.line(points, fill=CURVE_COLOUR, width=2)
        draw.ellipse([points[-1][0] - 3, points[-1][1] - 3, points[-1][0] + 3, points[-1][1] + 3], fill=CURVE_COLOUR)
    title = '\n'.join(curve_title(dataclasses.replace(
        curve, name=visualization.drawable_name(curve.name, curve.class_id))))
    draw.multiline_text((left, 4), title, fill='black', font=visualization.label_font(title, 12), spacing=1)
    return picture


def save_pr_curve_pngs(plot_dir, curves):
    """One PNG per ClassCurve in plot_dir (created), 'pr_<class name>.png' (see _file_name); returns the paths."""
    os.makedirs(plot_dir, exist_ok=True)
    paths, taken = [], set()
    for curve in curves:
        paths.append(os.path.join(plot_dir, _file_name(curve.name, taken)))
        draw_pr_curve(curve).save(paths[-1])
    return paths


def pictures_of(images, evaluated, class_names, score_threshold):
    """A Picture of each image, images[i] being the one of image id i (uint8 [H, W, 3]).

    evaluated: (Detections, GroundTruth, Matches) of voc_matching. Detections scoring >= score_threshold are
    drawn as TP or FP (ignored ones, which took a difficult box, are not drawn); a non-difficult ground truth
    that none of them took is 'missed'. Because a detection's outcome depends only on those scored above it,
    the drawn ones keep their outcomes of the full evaluation.
    """
    detections, ground_truth, matches = evaluated
    names = [visualization.drawable_name(name, class_id) for class_id, name in enumerate(class_names)]
    det_images = np.asarray(detections.image_ids).reshape(-1)
    gt_images = np.asarray(ground_truth.image_ids).reshape(-1)
    drawn = (np.asarray(detections.scores) >= score_threshold) & ~matches.ignored
    found = np.zeros(len(gt_images), dtype=bool)
    found[matches.gt_index[drawn & matches.true_positive]] = True
    missed = ~found & (np.asarray(ground_truth.difficult).reshape(-1) == 0)
    pictures = []
    for image_id, image in enumerate(images):
        shown = np.flatnonzero(drawn & (det_images == image_id))
        lost = np.flatnonzero(missed & (gt_images == image_id))
        kinds = ['tp' if matches.true_positive[i] else 'fp' for i in shown] + ['missed'] * len(lost)
        captions = ['%s %.2f' % (names[detections.classes[i]], detections.scores[i]) for i in shown]
        captions += [names[ground_truth.classes[i]] for i in lost]
        boxes = np.concatenate([np.asarray(detections.boxes)[shown], np.asarray(ground_truth.boxes)[lost]])
        pictures.append(Picture(np.asarray(image, dtype=np.uint8), boxes.reshape(-1, 4), kinds, captions))
    return pictures


def draw_picture(picture):
    """A PIL RGB image of a Picture: boxes in their kind's colour (missed, then FP, then TP on top), captions."""
    canvas = Image.fromarray(picture.image).convert('RGB')
    width, height = canvas.size
    line_width, font_size = visualization.drawing_sizes(height, width)
    draw = ImageDraw.Draw(canvas)
    pixels = np.clip(visualization.boxes_to_pixels(picture.boxes, height, width), 0,
                     [height - 1, width - 1, height - 1, width - 1])
    order = [i for kind in _KIND_COLOURS for i, k in enumerate(picture.kinds) if k == kind]
    for index in order:
        ymin, xmin, ymax, xmax = pixels[index]
        draw.rectangle([xmin, ymin, xmax, ymax], outline=_KIND_COLOURS[picture.kinds[index]], width=line_width)
    fonts = [visualization.label_font(caption, font_size) for caption in picture.captions]
    captions = visualization.place_labels(draw, fonts, picture.captions, pixels, order, (width, height))   # TPs on top
    for index in order:
        (x, y), (left, top, _, _), _ = captions[index]
        draw.text((x - left, y - top), picture.captions[index], fill=_KIND_COLOURS[picture.kinds[index]],
                  font=fonts[index])
    return canvas


def save_detection_grid(path, pictures, columns=4):
    """The Pictures drawn side by side, `columns` per row, each in a cell of the largest one's size; a PNG at
    path (its directory is created). Returns path."""
    if not pictures:
        raise ValueError('no pictures to draw')
    drawn = [draw_picture(picture) for picture in pictures]
    cell_width = max(image.size[0] for image in drawn)
    cell_height = max(image.size[1] for image in drawn)
    columns = min(columns, len(drawn))
    rows = -(-len(drawn) // columns)
    grid = Image.new('RGB', (columns * cell_width, rows * cell_height), 'white')
    for index, image in enumerate(drawn):
        grid.paste(image, ((index % columns) * cell_width, (index // columns) * cell_height))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)
    return path
