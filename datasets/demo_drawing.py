"""Drawing the synthetic "commodity" images: product-like objects on shelves (datasets/demo_dataset.py
writes them as a Pascal VOC dataset).

Four classes that differ in shape, not only colour: 'bottle' (tall, neck and cap, label band),
'can' (cylinder with a silver rim ellipse and stripes), 'box' (a cuboid with a printed pattern) and
'bag' (a pillow pack with crimped zig-zag ends and a round logo). Objects overlap partially (the
box is the visible extent, VOC's rule); objects cut by the border are 'truncated'; tiny or heavily
occluded ones are 'difficult'. Every random choice comes from the numpy Generator passed in.
"""
import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES = ('bag', 'bottle', 'box', 'can')  # sorted: the converter's default label order agrees
ASPECT_RANGE = {'bottle': (2.3, 3.1), 'can': (1.4, 1.9), 'box': (0.6, 1.6), 'bag': (1.0, 1.45)}  # h / w
MIN_SIDE = 30          # px, shorter side of a normal object
TINY_SIDE = (12, 20)   # px, shorter side of an occasional tiny (difficult) object
MIN_VISIBLE = 0.45     # occluders may hide at most 55% of an earlier object
DIFFICULT_VISIBLE = 0.6


@dataclasses.dataclass(frozen=True)
class DemoStyle:
    """How the images of a demo dataset are composed."""
    image_size: tuple = (320, 480)                          # px, each side uniform in this range
    object_counts: tuple = (1, 2, 3, 4, 5, 6)               # objects tried per image ...
    count_weights: tuple = (0.1, 0.2, 0.25, 0.2, 0.15, 0.1)  # ... with these odds (None: equal)
    short_side: tuple = (MIN_SIDE, None)   # px, log-uniform; None: 0.42 of the image's shorter side
    tiny_fraction: float = 0.05            # objects drawn with a TINY_SIDE shorter side instead
    difficult_below: float = TINY_SIDE[1] + 2   # px: a visible shorter side below it is 'difficult'


# The Quick start's data, and a crowded variant whose objects are 8-18 px on their shorter side in 300 x 300
# images (the anchor-fit bench: SSD300's built-in anchors match few of them).
STYLES = {'demo': DemoStyle(),
          'small_objects': DemoStyle(image_size=(300, 300), object_counts=tuple(range(15, 31)), count_weights=None,
                                     short_side=(8, 18), tiny_fraction=0.0, difficult_below=0)}


def _colour(rng, low=40, high=230):
    return rng.integers(low, high, 3).astype(np.float32)


def _background(rng, height, width):
    """Float32 [H, W, 3] in 0..255: a gradient, smooth blotches, stripes or a shelf unit."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        t = x * np.cos(angle) + y * np.sin(angle)
        t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
        image = _colour(rng) * (1 - t) + _colour(rng) * t
    elif kind == 1:
        grid = rng.uniform(0, 255, (rng.integers(3, 8), rng.integers(3, 8), 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)
        image = 0.5 * image + 0.5 * _colour(rng)
    elif kind == 2:
        period = rng.uniform(12, 40)
        stripes = (np.sin((x + y * rng.uniform(-1, 1)) * 2 * np.pi / period) > 0)[..., None]
        image = np.where(stripes, _colour(rng, 90, 200), _colour(rng, 90, 200))
    else:
        image = np.broadcast_to(_colour(rng, 120, 230), (height, width, 3)).copy()
        wood = _colour(rng, 80, 170)
        for shelf_y in np.linspace(0, height, rng.integers(2, 4) + 1)[1:-1]:
            top, thickness = int(shelf_y), int(rng.integers(8, 15))
            image[top:top + thickness] = wood
            image[top:top + 2] = np.minimum(wood * 1.3, 255)
            image[top + thickness:top + thickness + 6] *= 0.7  # shadow under the shelf
            for tag_x in rng.integers(0, width - 20, rng.integers(1, 4)):
                image[top + 3:top + thickness - 2, tag_x:tag_x + 18] = 245  # price tags
    return image + rng.normal(0, rng.uniform(2, 8), (height, width, 3)).astype(np.float32)


def _cylinder_shading(width, strength):
    """Per-column brightness of a lit cylinder, brightest at 35% of the width."""
    u = (np.arange(width, dtype=np.float32) + 0.5) / width
    return (1 - strength + strength * np.cos(np.pi * (u - 0.35)))[None, :, None]


def _draw_bottle(rng, h, w, paint, mask):
    neck_w, cap_w = 0.38 * w, 0.48 * w
    mask.rectangle([(w - cap_w) / 2, 0, (w + cap_w) / 2, 0.09 * h], fill=255)
    mask.rectangle([(w - neck_w) / 2, 0.08 * h, (w + neck_w) / 2, 0.26 * h], fill=255)
    shoulders = [((w - neck_w) / 2, 0.24 * h), ((w + neck_w) / 2, 0.24 * h), (w - 1, 0.4 * h), (0, 0.4 * h)]
    mask.polygon(shoulders, fill=255)
    mask.rounded_rectangle([0, 0.36 * h, w - 1, h - 1], radius=max(1, 0.2 * w), fill=255)
    paint[:] = _colour(rng, 20, 200)
    paint[: int(0.09 * h) + 1] = _colour(rng, 150, 255)
    band_top, band_bottom = int(rng.uniform(0.5, 0.58) * h), int(rng.uniform(0.75, 0.85) * h)
    paint[band_top:band_bottom] = _colour(rng, 170, 255)
    for line_y in np.linspace(band_top, band_bottom, 5)[1:-1].astype(int):
        paint[line_y:line_y + max(1, h // 80), int(0.2 * w):int(0.8 * w)] = 30  # printed text
    paint *= _cylinder_shading(w, 0.45)


def _draw_can(rng, h, w, paint, mask):
    rim = max(2, int(0.12 * w))
    mask.rectangle([0, rim, w - 1, h - 1 - rim], fill=255)
    mask.ellipse([0, h - 1 - 2 * rim, w - 1, h - 1], fill=255)
    mask.ellipse([0, 0, w - 1, 2 * rim], fill=255)
    paint[:] = _colour(rng, 30, 240)
    stripe = _colour(rng, 30, 240)
    for top in rng.uniform(0.25, 0.8, 2):
        paint[int(top * h):int((top + rng.uniform(0.05, 0.12)) * h)] = stripe
    paint[: 2 * rim + 1] = 205
    paint[int(0.5 * rim):int(1.5 * rim) + 1, int(0.15 * w):int(0.85 * w)] = 150  # lid inside the rim
    paint *= _cylinder_shading(w, 0.6)
    paint[:, int(0.28 * w):int(0.28 * w) + max(1, w // 12)] = 250  # metallic highlight


def _draw_box(rng, h, w, paint, mask):
    depth = max(3, int(0.15 * min(h, w)))
    mask.rectangle([0, 0, w - 1, h - 1], fill=255)
    mask.polygon([(0, 0), (depth - 1, 0), (0, depth - 1)], fill=0)
    mask.polygon([(w - 1, h - 1), (w - 1, h - depth), (w - depth, h - 1)], fill=0)
    base, ink = _colour(rng), _colour(rng)
    y, x = np.mgrid[0:h, 0:w]
    period = rng.integers(6, 14)
    checks = (x // period + y // period) % 2 == 0
    stripes = (x + y) % (2 * period) < period
    dots = (x % period - period / 2) ** 2 + (y % period - period / 2) ** 2 < (period / 3) ** 2
    pattern = (checks, stripes, dots)[rng.integers(3)]
    paint[:] = np.where(pattern[..., None], ink, base)
    paint[:depth] = np.minimum(base * 1.35, 255)      # lit top face
    paint[:, w - depth:] = base * 0.6                 # shaded side face
    paint[:, w - depth - 1:w - depth + 1] = 20        # edges
    paint[depth - 1:depth + 1] = 20


def _draw_bag(rng, h, w, paint, mask):
    crimp = max(3, int(0.1 * h))
    teeth = max(3, w // 8)
    xs = np.linspace(0, w - 1, 2 * teeth + 1)
    top = [(x, 0 if i % 2 else crimp * 0.6) for i, x in enumerate(xs)]
    bottom = [(x, h - 1 if i % 2 else h - 1 - crimp * 0.6) for i, x in enumerate(xs)][::-1]
    right, left = [(w - 1, crimp), (w - 1, h - 1 - crimp)], [(0, h - 1 - crimp), (0, crimp)]
    mask.polygon(top + right + bottom + left, fill=255)
    body, logo = _colour(rng, 30, 240), _colour(rng, 30, 240)
    paint[:] = body
    paint[:crimp + 1] = paint[h - crimp - 1:] = body * 0.6
    paint[:crimp + 1, ::4] = paint[h - crimp - 1:, ::4] = 235   # crimp lines
    logo_img = Image.new('L', (w, h), 0)
    ImageDraw.Draw(logo_img).ellipse([0.2 * w, 0.3 * h, 0.8 * w, 0.7 * h], fill=255)
    paint[np.asarray(logo_img) > 0] = logo
    paint *= _cylinder_shading(w, 0.3)


DRAWERS = {'bottle': _draw_bottle, 'can': _draw_can, 'box': _draw_box, 'bag': _draw_bag}


def _draw_object(rng, name, short_side, max_height):
    """(paint float32 [h, w, 3], alpha float32 [h, w] in 0..1) of one object; h / w from ASPECT_RANGE."""
    aspect = rng.uniform(*ASPECT_RANGE[name])
    w, h = short_side, short_side * aspect
    if aspect < 1:
        w, h = short_side / aspect, short_side
    scale = min(1.0, max_height / h)
    w, h = max(8, int(w * scale)), max(8, int(h * scale))
    mask_img = Image.new('L', (w, h), 0)
    paint = np.zeros((h, w, 3), np.float32)
    DRAWERS[name](rng, h, w, paint, ImageDraw.Draw(mask_img))
    paint *= rng.uniform(0.75, 1.15)   # lighting
    alpha = np.asarray(mask_img.filter(ImageFilter.GaussianBlur(0.6)), np.float32) / 255
    return np.clip(paint, 0, 255), alpha


def _place(rng, canvas, owner, paint, alpha, areas, allow_truncation):
    """Paste an object (index len(areas)) at a random spot unless that hides more than
    1 - MIN_VISIBLE of an earlier object; appends its in-image area to areas. -> truncated flag,
    or None when it was not placed."""
    height, width = owner.shape
    h, w = alpha.shape
    margin_x, margin_y = (int(0.4 * w), int(0.4 * h)) if allow_truncation else (0, 0)
    if w - 2 * margin_x > width or h - 2 * margin_y > height:
        return None
    x0 = int(rng.integers(-margin_x, width - w + margin_x + 1))
    y0 = int(rng.integers(-margin_y, height - h + margin_y + 1))
    cy0, cy1, cx0, cx1 = max(y0, 0), min(y0 + h, height), max(x0, 0), min(x0 + w, width)
    patch_alpha = alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    covered = patch_alpha > 0.5
    region = owner[cy0:cy1, cx0:cx1]
    for earlier in np.unique(region[covered]):
        still_visible = np.sum(owner == earlier) - np.sum(region[covered] == earlier)
        if earlier >= 0 and still_visible < MIN_VISIBLE * areas[earlier]:
            return None
    a = patch_alpha[..., None]
    patch = paint[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    canvas[cy0:cy1, cx0:cx1] = canvas[cy0:cy1, cx0:cx1] * (1 - a) + patch * a
    region[covered] = len(areas)
    areas.append(int(np.sum(covered)))
    return int(np.sum(covered) < np.sum(alpha > 0.5))


def render_image(rng, style=STYLES['demo']):
    """(uint8 image [H, W, 3], objects: list of dicts name, xmin, ymin, xmax, ymax (VOC 1-based
    pixels of the visible extent), difficult, truncated) of a DemoStyle."""
    height, width = (int(rng.integers(style.image_size[0], style.image_size[1] + 1)) for _ in range(2))
    canvas = _background(rng, height, width)
    owner = np.full((height, width), -1, np.int32)
    placed, areas = [], []
    low, high = style.short_side[0], style.short_side[1] or 0.42 * min(height, width)
    for _ in range(int(rng.choice(style.object_counts, p=style.count_weights))):
        name = CLASS_NAMES[rng.integers(len(CLASS_NAMES))]
        tiny = rng.uniform() < style.tiny_fraction
        short_side = rng.uniform(*TINY_SIDE) if tiny else np.exp(rng.uniform(np.log(low), np.log(high)))
        paint, alpha = _draw_object(rng, name, short_side, 0.9 * height)
        for _attempt in range(10):
            truncated = _place(rng, canvas, owner, paint, alpha, areas, rng.uniform() < 0.15)
            if truncated is not None:
                placed.append((name, truncated))
                break
    objects = []
    for index, (name, truncated) in enumerate(placed):
        visible = owner == index
        rows, cols = np.nonzero(np.any(visible, axis=1))[0], np.nonzero(np.any(visible, axis=0))[0]
        short_side = min(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        occluded = np.sum(visible) < DIFFICULT_VISIBLE * areas[index]
        objects.append(dict(name=name, xmin=int(cols[0]) + 1, ymin=int(rows[0]) + 1, xmax=int(cols[-1]) + 1,
                            ymax=int(rows[-1]) + 1, truncated=truncated,
                            difficult=int(short_side < style.difficult_below or occluded)))
    image = np.clip(canvas * rng.uniform(0.85, 1.1) + rng.uniform(-15, 15), 0, 255)
    return image.astype(np.uint8), objects
