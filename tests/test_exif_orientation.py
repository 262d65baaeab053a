"""preprocessing/exif_orientation.py: the orientation read in the graph against files Pillow writes and APP1
segments built by hand from the EXIF layout; the image turned as Pillow's transposes turn the same pixels."""
import io
import struct

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from preprocessing import exif_orientation

# Pillow's exif_transpose method for each orientation (Pillow's own table, not the module's).
PILLOW_TRANSPOSES = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
                     4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
                     6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_90]}


def jpeg(width=24, height=16, exif=None):
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (height, width, 3)).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format='JPEG', quality=90, **({'exif': exif} if exif is not None else {}))
    return out.getvalue()


def pillow_exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def with_app1(jpeg_bytes, tiff, after_app0=True):
    """The JPEG with an APP1 EXIF segment (FF E1, length, 'Exif\\0\\0', tiff) inserted after SOI, or after a
    JFIF APP0 segment placed first."""
    app1 = b'Exif\0\0' + tiff
    segment = b'\xff\xe1' + struct.pack('>H', len(app1) + 2) + app1
    app0 = b'\xff\xe0' + struct.pack('>H', 16) + b'JFIF\0\x01\x01\0\0\x01\0\x01\0\0' if after_app0 else b''
    body = jpeg_bytes[2:]
    if body.startswith(b'\xff\xe0'):                       # drop Pillow's own APP0
        body = body[2 + struct.unpack('>H', body[2:4])[0]:]
    return b'\xff\xd8' + app0 + segment + body


def tiff_block(orientation, little_endian, tags_before=2):
    """A TIFF header and IFD0 with `tags_before` other SHORT entries, then the orientation entry."""
    order = '<' if little_endian else '>'
    entries = [struct.pack(order + 'HHIHH', 0x0100 + i, 3, 1, 7, 0) for i in range(tags_before)]
    entries.append(struct.pack(order + 'HHIHH', 0x0112, 3, 1, orientation, 0))
    header = (b'II' if little_endian else b'MM') + struct.pack(order + 'HI', 42, 8)
    return header + struct.pack(order + 'H', len(entries)) + b''.join(entries) + struct.pack(order + 'I', 0)


def read_orientations(encoded_list):
    with tf.Graph().as_default():
        encoded = tf.placeholder(tf.string, [])
        orientation = exif_orientation.exif_orientation(encoded)
        with tf.Session() as session:
            return [int(session.run(orientation, {encoded: data})) for data in encoded_list]


@pytest.mark.parametrize('orientation', range(1, 9))
def test_orientation_of_pillow_files(orientation):
    assert read_orientations([jpeg(exif=pillow_exif(orientation))]) == [orientation]


def test_orientation_of_hand_built_segments_both_byte_orders():
    plain = jpeg()
    files = [with_app1(plain, tiff_block(6, little_endian=True)),
             with_app1(plain, tiff_block(8, little_endian=False, tags_before=5)),
             with_app1(plain, tiff_block(3, little_endian=True, tags_before=0), after_app0=False)]
    assert read_orientations(files) == [6, 8, 3]


def test_no_or_bad_orientation_reads_1():
    plain = jpeg()
    png = io.BytesIO()
    Image.new('RGB', (8, 8)).save(png, format='PNG')
    no_tag = with_app1(plain, tiff_block(6, True)[:8] + struct.pack('<H', 1)
                       + struct.pack('<HHIHH', 0x010F, 3, 1, 6, 0) + struct.pack('<I', 0))
    files = [plain, png.getvalue(), b'', b'not an image', no_tag,
             with_app1(plain, tiff_block(9, True)),                                 # no such orientation
             with_app1(plain, b'XX' + tiff_block(6, True)[2:]),                      # no byte order
             with_app1(plain, tiff_block(6, True))[:30]]                              # cut short in the IFD
    assert read_orientations(files) == [1] * len(files)


@pytest.mark.parametrize('orientation', range(1, 9))
def test_turned_image_is_pillows_transpose_of_the_same_pixels(orientation):
    stored = np.random.RandomState(orientation).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    expected = Image.fromarray(stored)
    for method in PILLOW_TRANSPOSES.get(orientation, []):
        expected = expected.transpose(method)
    with tf.Graph().as_default():
        image = tf.placeholder(tf.uint8, [None, None, 3])
        turned = exif_orientation.turn_upright(image, tf.constant(orientation))
        with tf.Session() as session:
            np.testing.assert_array_equal(session.run(turned, {image: stored}), np.asarray(expected))
