"""Synthetic "commodity" dataset: determinism, classes, image/XML consistency, atomic generation."""
import dataclasses
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from datasets import dataset_info, demo_dataset, demo_drawing
from utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
    with open(path, 'rb') as source:
        return source.read()


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    demo_dataset.generate_demo_dataset(str(root / 'a'), seed=3, num_train=12, num_test=4)
    return root / 'a'


def test_same_seed_gives_identical_files(demo, tmp_path):
    demo_dataset.generate_demo_dataset(str(tmp_path / 'b'), seed=3, num_train=12, num_test=4)
    for sub in ('Annotations', 'JPEGImages', os.path.join('ImageSets', 'Main')):
        names = sorted(os.listdir(demo / sub))
        assert names == sorted(os.listdir(tmp_path / 'b' / sub))
        assert all(_read(demo / sub / n) == _read(tmp_path / 'b' / sub / n) for n in names)
    demo_dataset.generate_demo_dataset(str(tmp_path / 'c'), seed=4, num_train=2, num_test=0)
    assert _read(demo / 'Annotations' / '000000.xml') != _read(tmp_path / 'c' / 'Annotations' / '000000.xml')


def test_layout_splits_and_labels(demo):
    assert (demo / 'labels.txt').read_text().split() == ['bag', 'bottle', 'box', 'can']
    train = (demo / 'ImageSets' / 'Main' / 'train.txt').read_text().split()
    test = (demo / 'ImageSets' / 'Main' / 'test.txt').read_text().split()
    assert len(train) == 12 and len(test) == 4 and not set(train) & set(test)
    assert sorted(train + test) == sorted(n[:-4] for n in os.listdir(demo / 'Annotations') if n.endswith('.xml'))
    assert not [n for n in os.listdir(demo) if n.startswith('.demo-partial-')]


def test_xml_matches_images_and_boxes_are_sane(demo):
    names, sides = set(), []
    for xml_name in sorted(n for n in os.listdir(demo / 'Annotations') if n.endswith('.xml')):
        root = ET.parse(demo / 'Annotations' / xml_name).getroot()
        with Image.open(demo / 'JPEGImages' / root.findtext('filename')) as image:
            assert image.mode == 'RGB' and 300 <= min(image.size) and max(image.size) <= 500
            assert (int(root.findtext('size/width')), int(root.findtext('size/height'))) == image.size
            width, height = image.size
        assert root.findall('object'), xml_name
        for obj in root.findall('object'):
            names.add(obj.findtext('name'))
            x0, y0, x1, y1 = (int(obj.findtext(f'bndbox/{k}')) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
            assert 1 <= x0 < x1 <= width and 1 <= y0 < y1 <= height  # VOC 1-based pixel indices
            assert obj.findtext('difficult') in ('0', '1') and obj.findtext('truncated') in ('0', '1')
            sides.append(min(x1 - x0, y1 - y0) + 1)
    assert names <= set(demo_drawing.CLASS_NAMES) and len(names) >= 4
    assert np.mean(np.array(sides) >= 26) > 0.8  # most objects large enough to learn


def test_object_pixels_differ_from_background():
    rng = np.random.default_rng([0, 7])
    style = dataclasses.replace(demo_drawing.STYLES['demo'], image_size=(320, 320))
    image, objects = demo_drawing.render_image(rng, style)
    assert image.shape[0] == image.shape[1] == 320 and objects
    for obj in objects:
        box = image[obj['ymin'] - 1:obj['ymax'], obj['xmin'] - 1:obj['xmax']].astype(float)
        assert box.std() > 5  # drawn, textured content inside every box


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    def fail(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(demo_dataset, '_write_files', fail)
    with pytest.raises(KeyboardInterrupt):
        demo_dataset.generate_demo_dataset(str(tmp_path), num_train=2, num_test=1)
    assert os.listdir(tmp_path) == []


def test_refuses_to_overwrite_user_data(demo, tmp_path):
    with pytest.raises(UserError, match='already holds Annotations'):
        demo_dataset.generate_demo_dataset(str(demo), num_train=1, num_test=0)
    (tmp_path / 'JPEGImages').mkdir()
    (tmp_path / 'JPEGImages' / 'mine.jpg').write_bytes(b'x')
    with pytest.raises(UserError, match='JPEGImages: holds files but no annotations'):
        demo_dataset.generate_demo_dataset(str(tmp_path), num_train=1, num_test=0)


def test_ensure_demo_dataset_generates_converts_then_reuses(tmp_path):
    image_dir, records = tmp_path / 'IMAGE', tmp_path / 'IMAGE' / 'tfrecords'
    (image_dir / '.demo-partial-old').mkdir(parents=True)  # left by an interrupted run
    messages = []
    returned = demo_dataset.ensure_demo_dataset(str(image_dir), str(records), messages.append, num_train=3, num_test=2)
    assert returned == str(records) and 'generating the demo "commodity" dataset' in messages[0]
    info = dataset_info.load_dataset_info(str(records))
    assert info.class_names == ['none', 'bag', 'bottle', 'box', 'can'] and info.num_samples == {'test': 2, 'train': 3}
    assert not (image_dir / '.demo-partial-old').exists()
    messages.clear()
    demo_dataset.ensure_demo_dataset(str(image_dir), str(records), messages.append)
    assert messages == []  # already converted: nothing to do
    os.remove(records / 'dataset_info.json')
    demo_dataset.ensure_demo_dataset(str(image_dir), str(records), messages.append)
    assert 'converting' in messages[0] and not any('generating' in m for m in messages)


def _run_script(*args):
    return subprocess.run([sys.executable, '-m', 'datasets.demo_dataset', *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_script_writes_then_refuses_with_one_error_line(tmp_path):
    target = tmp_path / 'shop'
    done = _run_script(f'--output_dir={target}', '--num_train=2', '--num_test=1', '--seed=1')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'wrote 2 train + 1 test images (demo) to {target}'
    assert len(os.listdir(target / 'Annotations')) == 3 + 1   # the images + the generator's marker
    refused = _run_script(f'--output_dir={target}', '--num_train=2', '--num_test=1')
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f'demo_dataset.py: error: {target}: already holds Annotations/*.xml; not overwriting them: generate the '
        'demo data into another folder (--output_dir=demo) or move those files away']
