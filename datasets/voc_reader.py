"""Reading one Pascal VOC sample: its annotation XML, its image file, and repair of its boxes.

XML is parsed with defusedxml (entity declarations, external entities and DTD fetches are refused).
Images: an RGB JPEG (MPO, a JPEG with extra preview frames, included) or an 8-bit RGB PNG is returned
as its original bytes (fast, lossless); anything else (grayscale, palette, CMYK, alpha, 16-bit, or a photo
whose EXIF orientation says it is stored turned) is turned upright, converted to RGB, alpha composited on
white, and re-encoded in its own format: PNG losslessly, JPEG at quality 95; so is a photo whose shorter side is
over the converter's limit, downscaled to it. Other formats Pillow reads (WebP, BMP, TIFF, GIF: its first
frame) are converted so too, and re-encoded as JPEG, which TensorFlow's decoders read. Records hold photos
upright, as detect.py and image viewers show them; TensorFlow's decoders ignore EXIF. Boxes are scaled to the
image when its <size> is its shape at another scale (resized after labelling), and clipped to
[0, width] x [0, height] pixels of the image they were drawn on; those with swapped corners (a max below its
min), and those of zero area before or after clipping, are dropped; then they are turned upright with the
photo. A sample that cannot be used raises SampleError, whose message is the reason. No TensorFlow here.
"""
import collections
import dataclasses
import functools
import io
import math
import os
import warnings

import defusedxml
import defusedxml.ElementTree as safe_xml
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datasets.dataset_info import class_name

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.JPG', '.JPEG', '.PNG')   # tried after an image's stem, in order
# The extensions, in any case, of the image files a folder lists (image_names): JPEG, PNG, and the formats the
# converter stores re-encoded as JPEG, which detect.py reads too; a folder's .webp photo was passed over unsaid.
LISTED_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff', '.gif')
JPEG_QUALITY = 95
# Pillow warns (naming no file) about images over 89 MP and refuses those over twice that as possible
# decompression bombs: a phone's 108 MP photo was warned about and its 200 MP mode's photos left out. The files
# are the user's own: they open up to 600 MP (1.8 GB decoded) without the warning, and a file that claims more
# is refused by name (SampleError in the converter, a skipped file in detect.py).
Image.MAX_IMAGE_PIXELS = 300_000_000   # Pillow refuses over twice this
warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)
EXIF_ORIENTATION = 0x0112   # EXIF tag: how the stored pixels turn to show the photo upright, 1 (as stored) to 8
# Each orientation's turn (Pillow's ImageOps.exif_transpose) as the map of a point (x, y), in pixel-edge
# coordinates of a stored image of width w and height h, to the upright image (orientations 5-8 swap w and h).
_TURN_UPRIGHT = {
    2: lambda x, y, w, h: (w - x, y),        # mirrored left-right
    3: lambda x, y, w, h: (w - x, h - y),    # turned 180 degrees
    4: lambda x, y, w, h: (x, h - y),        # mirrored top-bottom
    5: lambda x, y, w, h: (y, x),            # mirrored along the main diagonal
    6: lambda x, y, w, h: (h - y, x),        # turned 90 degrees clockwise (a phone's portrait shot)
    7: lambda x, y, w, h: (h - y, w - x),    # mirrored along the other diagonal
    8: lambda x, y, w, h: (y, w - x),        # turned 90 degrees counter-clockwise
}


class SampleError(Exception):
    """A sample that must be left out; the message is the reason."""


@dataclasses.dataclass
class VocObject:
    """One <object>: box in VOC pixel coordinates (float), flags 0/1."""
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: int = 0
    truncated: int = 0


# filename: <filename> ('' when absent); size: (height, width) from <size> or None; objects: [VocObject]
VocAnnotation = collections.namedtuple('VocAnnotation', 'filename size objects')


def _number(element, tag, where, default=None):
    """Float value of a child tag; an empty or missing tag gives default (an error when None)."""
    text = (element.findtext(tag) or '').strip()
    if not text and default is not None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise SampleError(f'malformed XML: {where} <{tag}> is {text!r}, expected a number')
    return value


def _xml_size(root):
    """(height, width) from <size>, or None when missing, zero or not a number."""
    try:
        height, width = (int(float(root.findtext(f'size/{tag}'))) for tag in ('height', 'width'))
    except (TypeError, ValueError):
        return None
    return (height, width) if height > 0 and width > 0 else None


def parse_voc_xml(path):
    """VocAnnotation from a VOC/labelImg XML file, parsed with defusedxml (no entities, no DTD fetch)."""
    try:
        root = safe_xml.parse(path).getroot()
    except defusedxml.EntitiesForbidden as err:
        if err.sysid or err.pubid:
            raise SampleError(f'unsafe XML refused: external entity {err.name!r}') from None
        raise SampleError(f'unsafe XML refused: entity declaration {err.name!r} '
                          '(possible entity-expansion bomb)') from None
    except defusedxml.DefusedXmlException as err:
        raise SampleError(f'unsafe XML refused: {err}') from None
    except safe_xml.ParseError as err:
        raise SampleError(f'malformed XML ({err})') from None
    except OSError as err:
        raise SampleError(f'cannot read the annotation file ({err.strerror})') from None
    if root.tag != 'annotation':
        raise SampleError(f'malformed XML: root element is <{root.tag}>, expected <annotation>')
    objects = []
    for index, element in enumerate(root.findall('object'), 1):
        name = class_name(element.findtext('name') or '')
        where = f'object {index}'
        if not name:
            raise SampleError(f'malformed XML: {where} has no <name>')
        bndbox = element.find('bndbox')
        if bndbox is None:
            raise SampleError(f'malformed XML: {where} ({name!r}) has no <bndbox>')
        xmin, ymin, xmax, ymax = (_number(bndbox, t, where) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
        difficult, truncated = (int(_number(element, t, where, 0) != 0) for t in ('difficult', 'truncated'))
        objects.append(VocObject(name, xmin, ymin, xmax, ymax, difficult, truncated))
    return VocAnnotation((root.findtext('filename') or '').strip(), _xml_size(root), objects)


def image_names(folder):
    """The sorted names of the files in `folder` (none when it does not exist) that LISTED_EXTENSIONS name."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(name for name in names if os.path.splitext(name)[1].lower() in LISTED_EXTENSIONS)


def filename_base(filename):
    """An XML's <filename> without folders, Windows ones included; '' when it is ''."""
    return os.path.basename(filename.replace('\\', '/'))


def _image_names(filename, annotation_stem):
    """(the XML's <filename> without folders, or ''; the stems tried with each of IMAGE_EXTENSIONS)."""
    base = filename_base(filename)
    stems = ([os.path.splitext(base)[0]] if base else []) + [annotation_stem]
    return base, list(dict.fromkeys(stems))


def find_image(images_dir, filename, annotation_stem):
    """Path of the image: JPEGImages/<filename>, else its stem, else the XML's, with .jpg/.jpeg/.png in either
    case, else with any of LISTED_EXTENSIONS in any case (a.Jpg, a.webp; one listing of the folder, made only
    for such an image); None when absent."""
    base, stems = _image_names(filename, annotation_stem)
    candidates = ([base] if base else []) + [stem + ext for stem in stems for ext in IMAGE_EXTENSIONS]
    for name in dict.fromkeys(candidates):
        path = os.path.join(images_dir, name)
        if os.path.isfile(path):
            return path
    try:
        by_stem = _images_by_stem(images_dir, os.stat(images_dir).st_mtime_ns)
    except OSError:   # no such folder
        return None
    found = next((by_stem[stem] for stem in stems if stem in by_stem), None)
    return os.path.join(images_dir, found) if found else None


@functools.lru_cache(maxsize=8)
def _images_by_stem(images_dir, modified_ns):
    """{stem: file name} of image_names(images_dir): listed once per folder and change (modified_ns, the
    folder's mtime), not once per sample of a folder of .webp or .Jpg files."""
    by_stem = {}
    for name in image_names(images_dir):
        by_stem.setdefault(os.path.splitext(name)[0], name)
    return by_stem


def missing_image_reason(images_folder, filename, annotation_stem):
    """What find_image looked for, for the conversion report: 'image not found: no JPEGImages/a.jpg, .jpeg,
    .png, ... (any case)'."""
    base, stems = _image_names(filename, annotation_stem)
    other_extension = base and os.path.splitext(base)[1].lower() not in LISTED_EXTENSIONS
    extensions = ', '.join(LISTED_EXTENSIONS[1:-1]) + ' or ' + LISTED_EXTENSIONS[-1]
    tried = ([base] if other_extension else []) + [f'{stem}{LISTED_EXTENSIONS[0]}, {extensions}' for stem in stems]
    return f'image not found: no {images_folder}/{", nor ".join(tried)} (any case)'


def _is_8bit_rgb_png(data):
    """IHDR bit depth 8 and colour type 2 (truecolour, no alpha)."""
    return len(data) > 25 and data[24] == 8 and data[25] == 2


def to_rgb(image):
    """RGB copy of any Pillow image: alpha composited on white, 16-bit gray scaled to 8 bits (Pillow's own
    convert('RGB') clips 16-bit values to white and drops alpha). detect.py reads images through it too: the
    network sees them as training did."""
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L'):
        gray = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.round(gray), 0, 255).astype(np.uint8))
    if image.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or 'transparency' in image.info:
        rgba = image.convert('RGBA')
        canvas = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert('RGB')
    return image.convert('RGB')


@dataclasses.dataclass
class LoadedImage:
    """An image as a record stores it: upright, 3-channel RGB, JPEG or PNG."""
    encoded: bytes
    image_format: str          # 'JPEG' or 'PNG'
    height: int                # of the upright image at the file's resolution (the frame of its boxes)
    width: int
    note: str = None           # how it was converted, downscaling aside; None when only downscaled or kept
    orientation: int = 1       # the file's EXIF orientation (1: stored upright)
    downscaled_size: tuple = None   # (height, width) of the encoded pixels when downscaled, else None

    @property
    def stored_size(self):
        """(height, width) of the pixels as the file stores them (as LabelImg shows them)."""
        return (self.width, self.height) if self.orientation >= 5 else (self.height, self.width)

    @property
    def encoded_size(self):
        """(height, width) of the pixels `encoded` holds."""
        return self.downscaled_size or (self.height, self.width)


def downscaled_size(height, width, max_short_side):
    """(height, width) with the shorter side brought down to max_short_side, the aspect kept (each side
    rounded); the size itself when it is not over the limit or the limit is 0."""
    short_side = min(height, width)
    if not max_short_side or short_side <= max_short_side:
        return height, width
    scale = max_short_side / short_side
    return max(1, round(height * scale)), max(1, round(width * scale))


def _exif_orientation(image):
    """The EXIF orientation of an open Pillow image, 1 to 8; 1 when the tag is absent or invalid."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        return orientation if orientation in _TURN_UPRIGHT else 1
    except (OSError, SyntaxError, ValueError, TypeError):   # an EXIF block Pillow cannot parse, a value of no type
        return 1


def load_image(path, max_short_side=0):
    """LoadedImage of a fully decodable JPEG/PNG (another format Pillow reads becomes a JPEG): upright 3-channel
    RGB, downscaled (Lanczos) when its shorter side is over max_short_side pixels (0: no limit), the file's bytes
    kept when they are all that already."""
    try:
        with open(path, 'rb') as source:
            data = source.read()
        with Image.open(io.BytesIO(data)) as image:
            # A camera JPEG with an MPF preview frame opens as 'MPO': its bytes start with the main
            # JPEG frame, which is all a JPEG decoder (TensorFlow's too) reads.
            source_format = 'JPEG' if image.format == 'MPO' else image.format
            image_format = source_format if source_format in ('JPEG', 'PNG') else 'JPEG'
            image.load()  # full decode: truncated or corrupt files fail here, not in training
            orientation = _exif_orientation(image)
            is_rgb = image.mode == 'RGB' and (source_format == 'JPEG' or
                                              (source_format == 'PNG' and _is_8bit_rgb_png(data)))
            width, height = image.size
            over_limit = 0 < max_short_side < min(width, height)   # turning keeps the shorter side
            if is_rgb and orientation == 1 and not over_limit:
                return LoadedImage(data, image_format, height, width)
            if image.mode == 'RGB' and source_format != image_format:   # only its format changes: 'RGB WEBP, re-...'
                changes = [f'RGB {source_format}']
            else:
                changes = [] if is_rgb else [f'{image.mode} {source_format} converted to RGB']
            if orientation != 1:
                changes.insert(0, f'turned upright per its EXIF orientation {orientation}')
                image = ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
            upright_height, upright_width = rgb.height, rgb.width
            if over_limit:
                small_height, small_width = downscaled_size(upright_height, upright_width, max_short_side)
                rgb = rgb.resize((small_width, small_height), Image.LANCZOS, reducing_gap=3.0)
    except SampleError:
        raise
    except UnidentifiedImageError:
        raise SampleError(f'cannot decode image {os.path.basename(path)} (not an image file Pillow reads)') from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise SampleError(f'cannot decode image {os.path.basename(path)} ({err})') from None
    out = io.BytesIO()
    rgb.save(out, format=image_format, **({'quality': JPEG_QUALITY} if image_format == 'JPEG' else {}))
    note = ', '.join(changes) + f', re-encoded as {image_format}' if changes else None
    return LoadedImage(out.getvalue(), image_format, upright_height, upright_width, note, orientation,
                       (rgb.height, rgb.width) if over_limit else None)


def same_shape(xml_size, size):
    """Whether <size> xml_size (height, width; None: not given) is the image of `size` at some scale, within a
    pixel of rounding on either side: the photo as labelled, if resized since, or labelled on a smaller copy.
    A side rounded by half a pixel moves xml_height * width - xml_width * height by half the other image's
    side, so the tolerance is the larger image's longer side."""
    if xml_size is None:
        return False
    (xml_height, xml_width), (height, width) = xml_size, size
    return abs(xml_height * width - xml_width * height) <= max(xml_height, xml_width, height, width)


def drawn_on_stored(loaded, xml_size):
    """Whether the boxes were drawn on the image as the file stores it, told by <size> (height, width) or
    None: -> (bool, warning or None). A tool that shows a photo upright writes its upright size; LabelImg,
    which ignores EXIF, shows the stored pixels and writes their size (either at the labelled photo's scale,
    same_shape). When <size> is absent, or both shapes are the same (a photo turned 180 degrees or mirrored,
    a square one), the stored image is assumed, with a warning; a <size> of neither shape is fit_to_image's
    to judge."""
    upright = same_shape(xml_size, (loaded.height, loaded.width))
    if loaded.orientation == 1 or (xml_size is not None and not upright):
        return True, None
    if upright and not same_shape(xml_size, loaded.stored_size):
        return False, None
    why = 'no <size>' if xml_size is None else '<size> fits the photo both upright and as stored'
    return True, (f'EXIF orientation {loaded.orientation} and {why}: boxes taken as drawn on the stored pixels '
                  f'(as LabelImg shows them) and turned upright with the photo')


def boxes_frame_note(loaded, xml_size):
    """For a photo stored turned, how <size> told the frame its boxes were drawn on ('boxes as drawn on the
    upright photo (its <size>)'); None when the photo is upright or <size> did not tell (drawn_on_stored's or
    the size warning then says so)."""
    if loaded.orientation == 1 or loaded.stored_size == (loaded.height, loaded.width):
        return None
    if same_shape(xml_size, (loaded.height, loaded.width)):
        return 'boxes as drawn on the upright photo (its <size>)'
    if same_shape(xml_size, loaded.stored_size):
        return 'boxes as drawn on the stored pixels (its <size>, as LabelImg writes it), turned with the photo'
    return None


def turn_upright(objects, orientation, stored_height, stored_width):
    """Boxes drawn on an image as stored (stored_height x stored_width pixels) -> the same boxes on the image
    turned upright per its EXIF orientation. Each turn maps axis-aligned boxes to axis-aligned boxes, so a
    box's turned corners, sorted per axis, are the turned box."""
    if orientation == 1:
        return list(objects)
    turn = _TURN_UPRIGHT[orientation]
    turned = []
    for obj in objects:
        x0, y0 = turn(obj.xmin, obj.ymin, stored_width, stored_height)
        x1, y1 = turn(obj.xmax, obj.ymax, stored_width, stored_height)
        turned.append(dataclasses.replace(obj, xmin=min(x0, x1), ymin=min(y0, y1), xmax=max(x0, x1),
                                          ymax=max(y0, y1)))
    return turned


def fit_to_image(objects, xml_size, height, width, image_name):
    """Boxes drawn on an image of <size> xml_size (height, width; None: not given) -> on the real height x
    width image, and a (kind, reason) note or None. A <size> of the image's shape at another scale is the
    photo as labelled, resized since (to save space, or by a phone's export): its boxes are scaled with it
    (SSD-Tensorflow's converter divides them by <size>, which comes to the same). Another <size> is taken
    as wrong: the boxes stay as drawn on the real image, with a warning."""
    if xml_size is None or xml_size == (height, width):
        return objects, None
    xml_height, xml_width = xml_size
    differs = f'<size> {xml_width}x{xml_height} differs from the real image size {width}x{height} of {image_name}'
    if not same_shape(xml_size, (height, width)):
        return objects, ('warning', differs + ': real size used')
    x_scale, y_scale = width / xml_width, height / xml_height
    scaled = [dataclasses.replace(obj, xmin=obj.xmin * x_scale, xmax=obj.xmax * x_scale, ymin=obj.ymin * y_scale,
                                  ymax=obj.ymax * y_scale) for obj in objects]
    return scaled, ('repaired', f'{differs}, the same shape (resized after labelling): boxes scaled by {x_scale:.4g}')


def repair_boxes(objects, height, width):
    """Boxes clipped to [0, width] x [0, height] pixels; those with swapped corners or zero area dropped.
    -> (kept, notes)."""
    kept, notes = [], []
    for index, obj in enumerate(objects, 1):
        label = f'box {index} ({obj.name!r}, x {obj.xmin:g}..{obj.xmax:g}, y {obj.ymin:g}..{obj.ymax:g})'
        swapped = [f'{high} {high_value:g} < {low} {low_value:g}'
                   for low, low_value, high, high_value in (('xmin', obj.xmin, 'xmax', obj.xmax),
                                                            ('ymin', obj.ymin, 'ymax', obj.ymax))
                   if high_value < low_value]
        if swapped:
            notes.append(f'{label} has {" and ".join(swapped)}: dropped')
            continue
        if obj.xmax == obj.xmin or obj.ymax == obj.ymin:
            notes.append(f'{label} has zero area: dropped')
            continue
        clipped = dataclasses.replace(
            obj, xmin=min(max(obj.xmin, 0.0), width), xmax=min(max(obj.xmax, 0.0), width),
            ymin=min(max(obj.ymin, 0.0), height), ymax=min(max(obj.ymax, 0.0), height))
        if clipped.xmax <= clipped.xmin or clipped.ymax <= clipped.ymin:
            notes.append(f'{label} lies outside the {width}x{height} image: dropped')
            continue
        if clipped != obj:
            notes.append(f'{label} extends outside the {width}x{height} image: clipped')
        kept.append(clipped)
    return kept, notes
