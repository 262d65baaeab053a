"""A JPEG's EXIF orientation read in the graph, and the decoded image turned upright (pure tensor functions).

TensorFlow's image decoders ignore EXIF, so a phone's portrait shot (stored landscape, orientation 6) decodes
sideways. The records hold photos upright (datasets/voc_reader.py) and detect.py turns them with Pillow; the
served model (deployment/serving_model.py) receives the file's bytes and turns them here.

EXIF (JEITA CP-3451, in a JPEG's APP1 segment): bytes FF E1, a 2-byte length, "Exif\\0\\0", then a TIFF
header at offset t: byte order "II" (little-endian) or "MM" (big-endian), 42, and the 4-byte offset of IFD0
from t. IFD0: a 2-byte entry count, then 12-byte entries (tag, type, count, value); tag 0x0112 holds the
orientation, a SHORT in the first two bytes of the value. Orientation o maps the stored pixels to the
upright image as Pillow's ImageOps.exif_transpose does: transposed (rows <-> columns) when o >= 5, then
mirrored left-right when o is 2, 3, 6 or 7 and top-bottom when o is 3, 4, 7 or 8.
"""
import tensorflow.compat.v1 as tf

SEARCHED_BYTES = 65536      # APP1 comes before the image data and is at most 64 KiB long
_MAX_ENTRIES = 64           # IFD0 entries looked at (cameras write 10-20)
_HEADER = (0xFF, 0xE1, None, None) + tuple(b'Exif\0\0')   # None: the segment length, any value
_ORIENTATION_TAG = 0x0112


def _unsigned(data, positions, size, little_endian):
    """The unsigned integers (int64, the shape of `positions`) of `size` bytes at `positions` of uint8 [N]
    data; positions past the end read its last byte (the caller pads data and checks what it reads)."""
    indices = tf.minimum(positions[..., None] + tf.range(size), tf.shape(data)[0] - 1)
    values = tf.cast(tf.gather(data, indices), tf.int64)
    weights = tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * tf.range(size, dtype=tf.int64))
    weights = tf.where_v2(little_endian, weights, tf.reverse(weights, [0]))
    return tf.reduce_sum(values * weights, axis=-1)


def exif_orientation(encoded):
    """EXIF orientation (int32, 1-8) of one encoded image (a scalar string); 1 when the bytes carry none
    (PNG, a JPEG without EXIF or with a damaged block) or an invalid value."""
    head = tf.strings.substr(encoded, 0, SEARCHED_BYTES)
    data = tf.io.decode_raw(tf.strings.join([head, tf.constant(b'\0' * 32)]), tf.uint8)   # padded: reads stay in
    data.set_shape([None])
    # Where FF E1 .. .. "Exif\0\0" starts: each pattern byte compared over all starts at once; the first match.
    num_starts = tf.shape(data)[0] - len(_HEADER)
    matches = tf.ones([num_starts], tf.bool)
    for offset, byte in enumerate(_HEADER):
        if byte is not None:
            matches &= tf.equal(data[offset:offset + num_starts], byte)
    tiff = tf.cast(tf.argmax(tf.cast(matches, tf.int32)), tf.int32) + len(_HEADER)
    byte_order = _unsigned(data, tiff, 2, True)
    little_endian = tf.equal(byte_order, 0x4949)                                   # "II", else "MM"
    is_tiff = (tf.reduce_any(matches) & (little_endian | tf.equal(byte_order, 0x4D4D))
               & tf.equal(_unsigned(data, tiff + 2, 2, little_endian), 42))
    ifd = tiff + tf.cast(tf.minimum(_unsigned(data, tiff + 4, 4, little_endian), SEARCHED_BYTES), tf.int32)
    entries = ifd + 2 + 12 * tf.range(_MAX_ENTRIES)
    in_ifd = tf.range(_MAX_ENTRIES, dtype=tf.int64) < _unsigned(data, ifd, 2, little_endian)
    is_orientation = in_ifd & tf.equal(_unsigned(data, entries, 2, little_endian), _ORIENTATION_TAG)
    entry = tf.gather(entries, tf.argmax(tf.cast(is_orientation, tf.int32)))
    value = _unsigned(data, entry + 8, 2, little_endian)
    valid = is_tiff & tf.reduce_any(is_orientation) & (value >= 1) & (value <= 8)
    return tf.where_v2(valid, tf.cast(value, tf.int32), 1)


def turn_upright(image, orientation):
    """image [H, W, C] as stored, turned upright per its EXIF orientation (a scalar int32, 1-8)."""
    image = tf.cond(orientation >= 5, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
    mirror_columns = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
    mirror_rows = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
    image = tf.cond(mirror_columns, lambda: tf.reverse(image, [1]), lambda: image)
    return tf.cond(mirror_rows, lambda: tf.reverse(image, [0]), lambda: image)
