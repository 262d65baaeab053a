"""Boxes drawn on images: Pillow pictures for files (detect.py) and TF image summaries (TensorBoard).

Input boxes are normalised (ymin, xmin, ymax, xmax) floats; pixel coordinates are y * height, x * width
(continuous: a box covering the whole image is [0, 0, height, width]).
"""
import functools
import unicodedata

from absl import logging
import numpy as np
from PIL import Image, ImageDraw, ImageFont
import tensorflow.compat.v1 as tf

# 20 mutually distinct colours (Sasha Trubetskoy's list), RGB; class c gets PALETTE[(c - 1) % 20].
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)
# Fonts for labels after Pillow's own, which has ASCII only ('é', 'п', '生' come out as boxes): TrueType fonts
# the system may have, by file name (Pillow looks in the system's font folders: /usr/share/fonts and
# ~/.local/share/fonts, /Library/Fonts and /System/Library/Fonts, %WINDIR%\Fonts). Nothing is downloaded.
FONT_FILES = (
    'DejaVuSans.ttf',   # Latin, Greek, Cyrillic: most Linux systems
    'NotoSansCJK-Regular.ttc', 'wqy-microhei.ttc', 'wqy-zenhei.ttc', 'DroidSansFallbackFull.ttf',   # Linux CJK
    'Arial Unicode.ttf', 'Hiragino Sans GB.ttc', 'PingFang.ttc',   # macOS
    'arial.ttf', 'msyh.ttc', 'simsun.ttc', 'malgun.ttf', 'meiryo.ttc',   # Windows
)
_WARNED_NAMES = set()
# TensorBoard colours (RGBA in [0, 1]): ground truth green, predictions red.
GT_COLOUR_RGBA = (0.0, 1.0, 0.0, 1.0)
PREDICTION_COLOUR_RGBA = (1.0, 0.0, 0.0, 1.0)


def class_colour(class_id):
    """RGB tuple of a class id (1..K); ids beyond the palette wrap around."""
    return PALETTE[(int(class_id) - 1) % len(PALETTE)]


def boxes_to_pixels(boxes_yxyx, height, width):
    """Normalised yxyx [N, 4] -> pixel yxyx [N, 4] float64: (ymin * height, xmin * width, ...)."""
    return np.asarray(boxes_yxyx, dtype=np.float64).reshape(-1, 4) * np.array([height, width, height, width])


def drawing_sizes(height, width):
    """(line width, font size) in pixels, growing with the image: 2 and 11 px at 300 x 300."""
    shorter = min(height, width)
    return max(1, round(shorter / 200)), max(11, round(shorter * 0.035))


@functools.lru_cache(maxsize=None)
def _font_paths():
    """The paths of the FONT_FILES this system has, found once (Pillow walks the font folders for each name)."""
    paths = []
    for name in FONT_FILES:
        try:
            paths.append(ImageFont.truetype(name).path)
        except OSError:   # not on this system
            pass
    return tuple(paths)


@functools.lru_cache(maxsize=None)
def _fonts(size):
    """Pillow's own font at `size` px, then each of FONT_FILES this system has."""
    return (ImageFont.load_default(size=size),) + tuple(ImageFont.truetype(path, size) for path in _font_paths())


def _glyph(font, char):
    mask = font.getmask(char)
    return mask.size, bytes(mask)


@functools.lru_cache(maxsize=None)
def _missing_glyph(font):
    """What a font draws for a character it lacks: its glyph for U+10FFFF, which no font has."""
    return _glyph(font, '\U0010ffff')


def _draws(font, text):
    """Whether `font` has a glyph for every character of `text` (white space aside)."""
    return all(char.isspace() or _has_glyph(font, char) for char in set(text))


@functools.lru_cache(maxsize=4096)
def _has_glyph(font, char):
    """Cached per font and character: labels are drawn for every detection of every image."""
    return _glyph(font, char) != _missing_glyph(font)


def label_font(text, size):
    """The first of Pillow's own font and FONT_FILES, at `size` px, that draws `text` (Pillow's own when none)."""
    return next((font for font in _fonts(size) if _draws(font, text)), _fonts(size)[0])


def drawable_name(name, class_id):
    """`name` when a font here draws it; else its ASCII letters with the accents dropped ('Musli' for 'Müsli'),
    or 'class <id>' when that loses letters (Chinese, Cyrillic): a legible label rather than boxes. A warning
    says so once per name."""
    if any(_draws(font, name) for font in _fonts(12)):
        return name
    folded = ''.join(c for c in unicodedata.normalize('NFKD', name) if not unicodedata.combining(c))
    shown = folded if folded.isascii() else 'class %d' % class_id
    if name not in _WARNED_NAMES:
        _WARNED_NAMES.add(name)
        logging.warning('no font on this system draws the class name %r: labels show %r (a font that has its '
                        'letters, e.g. Noto Sans CJK for Chinese, would show it)', name, shown)
    return shown


def _label_text(class_id, score, class_names):
    name = drawable_name(class_names[class_id], class_id) if class_names is not None \
        and 0 <= class_id < len(class_names) else 'class %d' % class_id
    return name if score is None else '%s %.2f' % (name, score)


def _text_colour(background_rgb):
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    red, green, blue = background_rgb
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def label_position(box_pixels, text_size, image_size):
    """Top-left (x, y) of a label for a pixel box (ymin, xmin, ymax, xmax), kept inside the image.

    Above the box when it fits, else just inside its top edge; shifted left or up where it would leave
    the image. text_size = (text_width, text_height), image_size = (width, height).
    """
    text_width, text_height = text_size
    width, height = image_size
    ymin, xmin = box_pixels[0], box_pixels[1]
    y = ymin - text_height if ymin - text_height >= 0 else ymin
    x = min(max(xmin, 0), max(width - text_width, 0))
    y = min(max(y, 0), max(height - text_height, 0))
    return int(round(x)), int(round(y))


def _label_places(box_pixels, text_size, image_size):
    """Where a box's label may go, best first: label_position's place, just inside the box's top edge, just
    below its bottom edge, just inside its bottom edge; each kept inside the image."""
    text_width, text_height = text_size
    width, height = image_size
    ymin, xmin, ymax = box_pixels[0], box_pixels[1], box_pixels[2]
    x = min(max(xmin, 0), max(width - text_width, 0))
    places = [label_position(box_pixels, text_size, image_size)]
    for y in (ymin, ymax, ymax - text_height):
        places.append((int(round(x)), int(round(min(max(y, 0), max(height - text_height, 0))))))
    return places


def _overlap_area(place, size, rectangles):
    """Pixels a label at `place` of `size` shares with the rectangles (x, y, width, height)."""
    x, y = place
    width, height = size
    return sum(max(0, min(x + width, rx + rw) - max(x, rx)) * max(0, min(y + height, ry + rh) - max(y, ry))
               for rx, ry, rw, rh in rectangles)


def label_positions(boxes_pixels, text_sizes, image_size):
    """Top-left (x, y) of each pixel box's label, the boxes given most important first: each label takes the
    first of its places (_label_places) that no label placed before it covers, else the one they cover least,
    so that labels of boxes side by side or nested stay readable. text_sizes: (text_width, text_height) each."""
    placed, positions = [], []
    for box, size in zip(boxes_pixels, text_sizes):
        place = min(_label_places(box, size, image_size), key=lambda p: _overlap_area(p, size, placed))
        placed.append((*place, *size))
        positions.append(place)
    return positions


def place_labels(draw, fonts, texts, pixels, order, image_size, padding=0):
    """{index: ((x, y), text bounding box at the origin, (width, height))} of each text's label: the text plus
    `padding` on every side, placed by label_positions. fonts, texts, pixels: by index; order: drawing order, so
    the last label is placed first (it is drawn on top)."""
    corners = {index: draw.textbbox((0, 0), texts[index], font=fonts[index]) for index in order}
    sizes = {index: (right - left + 2 * padding, bottom - top + 2 * padding)
             for index, (left, top, right, bottom) in corners.items()}
    first = list(order)[::-1]
    places = label_positions([pixels[i] for i in first], [sizes[i] for i in first], image_size)
    return {index: (place, corners[index], sizes[index]) for index, place in zip(first, places)}


def draw_detections(image, boxes_yxyx, classes, scores=None, class_names=None):
    """A copy of `image` (PIL image of any mode, or uint8 array [H, W, 3]) as RGB with labelled boxes.

    boxes_yxyx [N, 4] normalised; classes [N] ids 1..K; scores [N] in [0, 1] or None (no score shown);
    class_names: list indexed by class id (index 0 = background) or None ('class <id>').
    Each class has its colour (PALETTE); higher scores are drawn last (on top); labels come after all
    boxes so no box line crosses a label, and a lower score's label moves aside from a higher one's
    (label_positions).
    """
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8)) if isinstance(image, np.ndarray) else image
    picture = picture.convert('RGB')
    width, height = picture.size
    line_width, font_size = drawing_sizes(height, width)
    draw = ImageDraw.Draw(picture)
    pixels = boxes_to_pixels(boxes_yxyx, height, width)
    pixels = np.clip(pixels, 0, [height - 1, width - 1, height - 1, width - 1])
    classes = np.asarray(classes).reshape(-1)
    order = np.argsort(scores, kind='stable') if scores is not None else np.arange(len(classes))
    for index in order:
        ymin, xmin, ymax, xmax = pixels[index]
        draw.rectangle([xmin, ymin, xmax, ymax], outline=class_colour(classes[index]), width=line_width)
    padding = max(1, font_size // 8)
    texts = {index: _label_text(int(classes[index]), None if scores is None else float(scores[index]), class_names)
             for index in order}
    fonts = {index: label_font(text, font_size) for index, text in texts.items()}
    labels = place_labels(draw, fonts, texts, pixels, order, (width, height), padding)   # highest score on top
    for index in order:
        colour = class_colour(classes[index])
        (x, y), (left, top, _, _), (label_width, label_height) = labels[index]
        draw.rectangle([x, y, x + label_width - 1, y + label_height - 1], fill=colour)
        draw.text((x + padding - left, y + padding - top), texts[index], fill=_text_colour(colour),
                  font=fonts[index])
    return picture


def _hide_invalid_boxes(boxes, valid):
    """Boxes [B, K, 4] with rows where `valid` [B, K] is False moved to (-1, -1, -1, -1), which
    tf.image.draw_bounding_boxes skips as outside the image (zeros would still colour pixel (0, 0))."""
    return tf.where(tf.broadcast_to(valid[:, :, None], tf.shape(boxes)), boxes, -tf.ones_like(boxes))


def draw_boxes_graph(images, detection_boxes, detection_scores, gt_boxes, num_gt_boxes, score_threshold=0.5):
    """Graph op: images with true boxes (green) and predicted boxes scoring >= score_threshold (red).

    images: float32 [B, H, W, 3] with values in [0, 255] (e.g. a preprocessed batch plus the VGG mean);
    detection_boxes [B, K, 4], detection_scores [B, K]; gt_boxes [B, M, 4] padded, num_gt_boxes [B].
    Returns float32 [B, H, W, 3] in [0, 1], ready for tf.summary.image.
    """
    pictures = tf.clip_by_value(tf.cast(images, tf.float32) / 255.0, 0.0, 1.0)
    gt_valid = tf.sequence_mask(num_gt_boxes, tf.shape(gt_boxes)[1])
    pictures = tf.image.draw_bounding_boxes(
        pictures, _hide_invalid_boxes(tf.cast(gt_boxes, tf.float32), gt_valid),
        colors=np.array([GT_COLOUR_RGBA], np.float32))
    predicted = _hide_invalid_boxes(tf.cast(detection_boxes, tf.float32), detection_scores >= score_threshold)
    return tf.image.draw_bounding_boxes(pictures, predicted, colors=np.array([PREDICTION_COLOUR_RGBA], np.float32))
