"""model_config.json: written atomically beside the checkpoints, found from the dir or a checkpoint path."""
import json
import os

import pytest

from utils import model_config as mc
from utils.errors import UserError

CONFIG = {'model_name': 'ssd_300_vgg', 'num_classes': 3, 'class_names': ['none', 'can', 'box'],
          'depth_multiplier': 0.5, 'anchor_set': 'ssd_tensorflow', 'image_size': (300, 300), 'data_format': 'NHWC'}


def test_round_trip_from_dir_and_from_checkpoint_prefix(tmp_path):
    mc.save_model_config(str(tmp_path), dict(CONFIG, labels_offset=1))
    expected = dict(CONFIG, image_size=[300, 300], labels_offset=1)
    assert mc.load_model_config(str(tmp_path)) == expected
    assert mc.load_model_config(str(tmp_path / 'model.ckpt-120')) == expected
    assert mc.load_model_config(str(tmp_path / mc.CONFIG_FILENAME)) == expected
    assert sorted(os.listdir(tmp_path)) == [mc.CONFIG_FILENAME]   # no temp file left behind
    assert os.stat(tmp_path / mc.CONFIG_FILENAME).st_mode & 0o044  # readable by others, like checkpoints


def test_labels_offset_is_optional_and_defaults_to_zero(tmp_path):
    (tmp_path / mc.CONFIG_FILENAME).write_text(json.dumps(dict(CONFIG, image_size=[300, 300])))  # an older file
    assert mc.load_model_config(str(tmp_path))['labels_offset'] == 0
    mc.save_model_config(str(tmp_path), CONFIG)
    assert json.loads((tmp_path / mc.CONFIG_FILENAME).read_text())['labels_offset'] == 0


def test_check_resumable(tmp_path):
    mc.check_resumable(str(tmp_path), CONFIG)                      # nothing saved: nothing to compare
    mc.save_model_config(str(tmp_path), CONFIG)
    mc.check_resumable(str(tmp_path), dict(CONFIG, data_format='NCHW', labels_offset=2))
    with pytest.raises(UserError, match=r'its checkpoints are of another model \(num_classes: 3 -> 21\); use a new '
                                        r'--train_dir or delete them to start again'):
        mc.check_resumable(str(tmp_path), dict(CONFIG, num_classes=21))


def test_absent_config_is_none(tmp_path):
    assert mc.load_model_config(str(tmp_path)) is None
    assert mc.load_model_config(str(tmp_path / 'model.ckpt-5')) is None


def test_save_requires_every_key(tmp_path):
    with pytest.raises(ValueError, match='anchor_set'):
        mc.save_model_config(str(tmp_path), {k: v for k, v in CONFIG.items() if k != 'anchor_set'})


@pytest.mark.parametrize('text, problem', [
    ('{not json', 'not valid JSON'),
    ('[1, 2]', 'expected a JSON object'),
    (json.dumps({'model_name': 'ssd_300_vgg'}), 'missing num_classes'),
    (json.dumps(dict(CONFIG, class_names=['none'])), 'class_names must list num_classes'),
])
def test_bad_file_is_one_line_naming_it(tmp_path, text, problem):
    (tmp_path / mc.CONFIG_FILENAME).write_text(text)
    with pytest.raises(UserError, match=problem) as raised:
        mc.load_model_config(str(tmp_path))
    assert str(tmp_path / mc.CONFIG_FILENAME) in str(raised.value)


def test_architecture_differences_ignore_data_format_and_names():
    other = dict(CONFIG, num_classes=21, depth_multiplier=1.0, data_format='NCHW', class_names=['none'] * 21)
    assert mc.architecture_differences(CONFIG, other) == ['num_classes: 3 -> 21', 'depth_multiplier: 0.5 -> 1.0']
    assert mc.architecture_differences(CONFIG, dict(CONFIG, image_size=[300, 300])) == []
