"""detect.py end to end: pictures written with boxes, JSON lines with boxes in original pixels."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from utils.model_config import inference_config
from tests import inference_fixtures as fixtures
from utils import visualization

SCORE_THRESHOLD = 0.5


@pytest.fixture(scope='module')
def detected(tmp_path_factory):
    root = tmp_path_factory.mktemp('detect')
    prefix = fixtures.make_checkpoint(str(root / 'train'))
    (root / 'other').mkdir()
    png = fixtures.encode(fixtures.make_image(90, 130, 0), 'PNG')
    (root / 'wide.png').write_bytes(png)
    (root / 'other' / 'wide.png').write_bytes(png)                       # same name in another folder
    Image.fromarray(fixtures.make_image(150, 70, 1)).convert('CMYK').save(root / 'cmyk.jpg')
    Image.fromarray(fixtures.make_image(64, 64, 2)).convert('L').save(root / 'gray.png')
    (root / 'folder').mkdir()
    (root / 'folder' / 'shelf.PNG').write_bytes(png)
    (root / 'folder' / 'notes.txt').write_text('not an image')
    images = [root / 'wide.png', root / '*.jpg', root / 'other' / '*.png', root / 'absent.jpg', root / '*.gif',
              root / 'folder']
    result = fixtures.run_script(['detect.py', '--checkpoint_path=%s' % prefix, '--images=%s' % ','.join(map(str, images)),
                                  '--output_dir=%s' % (root / 'out'), '--score_threshold=%g' % SCORE_THRESHOLD])
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {'root': root, 'prefix': prefix, 'png': png, 'lines': lines, 'output': result.stdout + result.stderr,
            'stderr': result.stderr}


def test_output_holds_no_tensorflow_noise(detected):
    fixtures.assert_no_tensorflow_noise(detected['output'])


def test_a_missing_file_or_a_pattern_matching_nothing_is_skipped_with_one_line(detected):
    for missing in (detected['root'] / 'absent.jpg', detected['root'] / '*.gif'):
        assert '%s: no such image file; skipped' % missing in detected['output']


def test_a_folder_stands_for_the_images_in_it(detected):
    folder = detected['root'] / 'folder'
    assert f'{folder / "shelf.PNG"}: ' in detected['output'] and 'notes.txt' not in detected['output']


def test_a_file_with_a_comma_in_its_name_is_that_file(detected, tmp_path):
    photo = tmp_path / 'shelf, left.png'
    photo.write_bytes(detected['png'])
    result = fixtures.run_script(['detect.py', '--checkpoint_path=%s' % detected['prefix'], '--images=%s' % photo,
                                  '--output_dir=%s' % (tmp_path / 'out')])
    assert result.returncode == 0 and f'{photo}: ' in result.stderr
    assert os.listdir(tmp_path / 'out') == ['shelf, left.png']


def test_images_that_all_miss_are_one_line_before_the_model_loads(detected, tmp_path):
    result = fixtures.run_script(['detect.py', '--checkpoint_path=%s' % detected['prefix'],
                                  '--images=%s,%s' % (tmp_path / 'a.jpg', tmp_path / '*.png'),
                                  '--output_dir=%s' % (tmp_path / 'out')])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'detect.py: error: --images: no such image file: %s, %s' % (tmp_path / 'a.jpg', tmp_path / '*.png'))


def test_each_image_says_how_many_detections_it_has_and_what_to_do_with_none(detected):
    for name in ('wide.png', 'cmyk.jpg'):
        path = str(detected['root'] / name)
        count = sum(line['image'] == path for line in detected['lines'])
        said = {0: 'no detection scoring 0.5 or more (--score_threshold shows weaker ones)', 1: '1 detection'}
        assert '%s: %s -> ' % (path, said.get(count, '%d detections' % count)) in detected['output']


def test_last_line_counts_the_images_drawn_the_detections_and_the_skipped(detected):
    """Four images drawn; absent.jpg and *.gif skipped."""
    last = detected['stderr'].strip().splitlines()[-1]
    assert last == '4 image(s) drawn in %s, %d detection(s) scoring 0.5 or more, 2 skipped' % (
        detected['root'] / 'out', len(detected['lines']))


def test_pictures_are_written_with_original_sizes(detected):
    out = detected['root'] / 'out'
    assert sorted(os.listdir(out)) == ['cmyk.jpg', 'shelf.png', 'wide.png', 'wide_2.png']
    assert Image.open(out / 'wide.png').size == (130, 90)
    assert Image.open(out / 'cmyk.jpg').size == (70, 150)
    assert Image.open(out / 'cmyk.jpg').mode == 'RGB'


def test_json_lines_have_pixel_boxes_inside_the_image(detected):
    lines = detected['lines']
    assert lines, 'the fixture checkpoint favours class 1: there must be confident detections'
    sizes = {str(detected['root'] / 'wide.png'): (90, 130), str(detected['root'] / 'cmyk.jpg'): (150, 70),
             str(detected['root'] / 'other' / 'wide.png'): (90, 130),
             str(detected['root'] / 'folder' / 'shelf.PNG'): (90, 130)}
    for line in lines:
        assert set(line) == {'image', 'class', 'class_id', 'score', 'box'}
        height, width = sizes[line['image']]
        box = line['box']
        assert 0 <= box['xmin'] <= box['xmax'] <= width and 0 <= box['ymin'] <= box['ymax'] <= height
        assert line['score'] >= SCORE_THRESHOLD
        assert line['class'] == fixtures.CLASS_NAMES[line['class_id']]


def test_boxes_are_the_checkpoint_detections_scaled_to_pixels(detected):
    config = inference_config(detected['prefix'], {})
    reference = fixtures.reference_detections(
        detected['prefix'], [detected['png']], config,
        dict(score_threshold=SCORE_THRESHOLD, nms_threshold=0.45, top_k=400, keep_top_k=200))[0]
    lines = [line for line in detected['lines'] if line['image'] == str(detected['root'] / 'wide.png')]
    boxes = np.array([[line['box'][k] / scale for k, scale in
                       (('ymin', 90), ('xmin', 130), ('ymax', 90), ('xmax', 130))] for line in lines])
    fixtures.assert_same_detections(reference, boxes.reshape(-1, 4), [line['score'] for line in lines],
                                    [line['class_id'] for line in lines], atol=1e-4)


def test_boxes_are_drawn_in_class_colours(detected):
    lines = [line for line in detected['lines'] if line['image'] == str(detected['root'] / 'wide.png')]
    drawn = np.asarray(Image.open(detected['root'] / 'out' / 'wide.png'))
    colours = {visualization.class_colour(line['class_id']) for line in lines}
    for colour in colours:
        assert np.all(drawn == np.array(colour, np.uint8), axis=-1).any(), colour


def test_unreadable_image_is_one_line_naming_the_file(detected, tmp_path):
    bad = tmp_path / 'bad.jpg'
    bad.write_text('not an image')
    result = fixtures.run_script(['detect.py', '--checkpoint_path=%s' % detected['prefix'], '--images=%s' % bad,
                                  '--output_dir=%s' % (tmp_path / 'out')])
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('detect.py: error: %s: cannot read the image' % bad)


def test_output_dir_that_is_a_file_is_one_line_before_the_model_loads(detected, tmp_path):
    taken = tmp_path / 'taken'
    taken.write_text('x')
    result = fixtures.run_script(['detect.py', '--checkpoint_path=%s' % detected['prefix'],
                                  '--images=%s' % (detected['root'] / 'wide.png'), '--output_dir=%s' % taken])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == 'detect.py: error: --output_dir=%s: is a file, not a folder' % taken


def test_16bit_and_transparent_pngs_are_seen_as_the_converter_stores_them(detected, tmp_path):
    """A 16-bit gray PNG is scaled to 8 bits (Pillow's convert('RGB') makes it all white), and a PNG's
    alpha is composited on white (convert('RGB') shows what the transparent pixels hold, black here)."""
    gray16 = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / 'gray16.png')
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., :3] = fixtures.make_image(40, 50, 3)
    rgba[..., 3] = np.repeat([0, 128, 255], [20, 10, 20])[None, :]   # transparent, half, opaque columns
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
    result = fixtures.run_script(['detect.py', '--checkpoint_path=%s' % detected['prefix'], '--score_threshold=1',
                                  '--images=%s,%s' % (tmp_path / 'gray16.png', tmp_path / 'alpha.png'),
                                  '--output_dir=%s' % (tmp_path / 'out')])
    assert result.returncode == 0, result.stderr[-2000:]
    seen = np.asarray(Image.open(tmp_path / 'out' / 'gray16.png').convert('RGB')).astype(float)
    np.testing.assert_array_equal(seen, np.round(gray16 * 255.0 / 65535.0)[..., None].repeat(3, axis=2))
    seen = np.asarray(Image.open(tmp_path / 'out' / 'alpha.png').convert('RGB')).astype(float)
    alpha = rgba[..., 3:] / 255.0
    np.testing.assert_allclose(seen, rgba[..., :3] * alpha + 255.0 * (1 - alpha), atol=1)
