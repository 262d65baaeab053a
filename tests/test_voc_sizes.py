"""A <size> that differs from the real image: a photo resized after labelling, or a wrong <size>."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from tests.test_voc_to_tfrecords import (STORED_BOX, convert, exif_photo, read_records, record_box, white_box,
                                         write_sample)


def _photo(width, height, box):
    """JPEG bytes: a grey photo with a white rectangle at box (xmin, ymin, xmax, ymax), pixel edges."""
    image = Image.new('RGB', (width, height), (60, 60, 60))
    ImageDraw.Draw(image).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format='JPEG', quality=95)
    return out.getvalue()


def test_boxes_of_a_photo_resized_after_labelling_are_scaled_with_it(tmp_path):
    # Labelled at 4000 x 2250, resized to 640 x 360 (0.16) before the conversion.
    write_sample(tmp_path, 'shelf', [('can', 1000, 500, 2500, 1750, '')], image=_photo(640, 360, (160, 80, 400, 280)),
                 size=(4000, 2250))
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    assert white_box(record['pixels']) == (160, 80, 400, 280)
    assert max(abs(a - b) for a, b in zip(record_box(record), (160, 80, 400, 280))) < 1e-3
    assert ('  repaired: Annotations/shelf.xml: <size> 4000x2250 differs from the real image size 640x360 of '
            'shelf.jpg, the same shape (resized after labelling): boxes scaled by 0.16') in summary.splitlines()
    assert result.count('background-only') == 0


def test_boxes_labelled_on_a_smaller_copy_are_scaled_to_the_photo(tmp_path):
    """Labelled on a 640 x 361 copy (2000 x 1127 at 0.32 is 640 x 360.64, rounded up), converted from the
    original: the rounding of the smaller side is within tolerance, as it is the other way round."""
    write_sample(tmp_path, 'shelf', [('can', 50, 25, 125, 87.5, '')], image=_photo(2000, 1127, (156, 78, 391, 273)),
                 size=(640, 361))
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    expected = (50 * 2000 / 640, 25 * 1127 / 361, 125 * 2000 / 640, 87.5 * 1127 / 361)
    assert max(abs(a - b) for a, b in zip(record_box(record), expected)) < 1e-2
    assert 'the same shape (resized after labelling)' in summary


def test_a_size_of_another_shape_is_a_warning_and_the_boxes_stay_as_drawn(tmp_path):
    write_sample(tmp_path, 'shelf', [('can', 160, 80, 400, 280, '')], image=_photo(640, 360, (160, 80, 400, 280)),
                 size=(500, 400))
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    assert max(abs(a - b) for a, b in zip(record_box(record), (160, 80, 400, 280))) < 1e-3
    assert ('  warning: Annotations/shelf.xml: <size> 500x400 differs from the real image size 640x360 of '
            'shelf.jpg: real size used') in summary.splitlines()


@pytest.mark.parametrize('orientation', [5, 6, 7, 8])
@pytest.mark.parametrize('drawn_upright', [True, False])   # a tool that shows photos upright, or LabelImg
def test_a_turned_photo_resized_after_labelling_has_its_boxes_scaled_and_turned(tmp_path, orientation, drawn_upright):
    data = exif_photo(orientation)   # 40 x 24 as stored, labelled at 10 times that size
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    box, (height, width) = ((white_box(upright), upright.shape[:2]) if drawn_upright else (STORED_BOX, (24, 40)))
    write_sample(tmp_path, 'p', [('can', *(10 * v for v in box), '')], image=data, size=(10 * width, 10 * height))
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    np.testing.assert_allclose(record_box(record), white_box(upright), atol=1e-4)
    assert result.count('warning') == 0, summary
    assert 'the same shape (resized after labelling): boxes scaled by 0.1' in summary
