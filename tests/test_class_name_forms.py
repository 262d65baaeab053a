"""Class names typed in Unicode's two forms of an accented letter (composed 'é', or 'e' and a combining accent,
as macOS file names and some tools write it) are one class: they look the same to the user."""
import json

import pytest

from datasets.dataset_info import load_dataset_info, read_labels_file
from tests.test_voc_to_tfrecords import convert, jpeg_bytes, write_sample
from utils import model_config as mc, tflite_detector
from utils.errors import UserError

COMPOSED = 'caf\u00e9 cr\u00e8me'
DECOMPOSED = 'cafe\u0301 cre\u0300me'


def _two_images(root):
    write_sample(root, 'a', [(COMPOSED, 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(root, 'b', [(DECOMPOSED, 2, 2, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))


def test_both_forms_in_annotations_are_one_class(tmp_path):
    _two_images(tmp_path)
    result, _ = convert(tmp_path)
    assert result.info.class_names == ['none', COMPOSED]
    assert result.info.boxes_per_class == {COMPOSED: 2}


def test_labels_file_in_the_other_form_keeps_every_image(tmp_path):
    _two_images(tmp_path)
    (tmp_path / 'labels.txt').write_text(DECOMPOSED + '\n', encoding='utf-8')
    result, summary = convert(tmp_path, class_names=read_labels_file(str(tmp_path / 'labels.txt')))
    assert result.info.class_names == ['none', COMPOSED]
    assert result.info.num_samples == {'train': 2}, summary


def test_files_written_before_names_were_composed_read_in_the_composed_form(tmp_path):
    """dataset_info.json, model_config.json and a TFLite model's .labels.txt of the older converter and trainer
    hold the decomposed form: read back composed, so a train_dir of then resumes on records converted now."""
    (tmp_path / 'dataset_info.json').write_text(json.dumps(
        {'name': 'shop', 'class_names': ['none', DECOMPOSED], 'num_samples': {'train': 2}}), encoding='utf-8')
    assert load_dataset_info(str(tmp_path)).class_names == ['none', COMPOSED]
    old = mc.ModelConfig(num_classes=2, class_names=('none', DECOMPOSED))
    (tmp_path / 'train').mkdir()
    (tmp_path / 'train' / 'model_config.json').write_text(json.dumps(old.to_json()), encoding='utf-8')
    assert mc.ModelConfig.load(str(tmp_path / 'train')).class_names == ('none', COMPOSED)
    mc.check_resumable(str(tmp_path / 'train'), mc.ModelConfig(num_classes=2, class_names=('none', COMPOSED)))
    (tmp_path / 'm.labels.txt').write_text(f'none\n{DECOMPOSED}\n', encoding='utf-8')
    assert tflite_detector.read_class_names(str(tmp_path / 'm.tflite')) == ['none', COMPOSED]
    (tmp_path / 'm.labels.txt').write_bytes('none\ncaf\u00e9\n'.encode('cp1252'))
    with pytest.raises(UserError, match=r'm.labels.txt: not UTF-8 text; save it as UTF-8'):
        tflite_detector.read_class_names(str(tmp_path / 'm.tflite'))
