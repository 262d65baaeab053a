"""ModelConfig and model_config.json: written atomically beside the checkpoints, found from the dir or a
checkpoint path, validated, and the one network builder of training, eval, detect and export."""
import dataclasses
import json
import os

import pytest
import tensorflow.compat.v1 as tf

from utils import model_config as mc
from utils.errors import UserError
from utils.model_config import ModelConfig

CONFIG = ModelConfig(model_name='ssd_300_vgg', num_classes=3, class_names=('none', 'can', 'box'), depth_multiplier=0.5,
                     anchor_set='ssd_tensorflow', image_size=(300, 300), data_format='NHWC')
PAYLOAD = {'model_name': 'ssd_300_vgg', 'num_classes': 3, 'class_names': ['none', 'can', 'box'], 'depth_multiplier': 0.5,
           'anchor_set': 'ssd_tensorflow', 'image_size': [300, 300], 'data_format': 'NHWC'}


def test_round_trip_from_dir_and_from_checkpoint_prefix(tmp_path):
    dataclasses.replace(CONFIG, labels_offset=1).save(str(tmp_path))
    expected = dataclasses.replace(CONFIG, labels_offset=1)
    assert ModelConfig.load(str(tmp_path)) == expected
    assert ModelConfig.load(str(tmp_path / 'model.ckpt-120')) == expected
    assert ModelConfig.load(str(tmp_path / mc.CONFIG_FILENAME)) == expected
    assert json.loads((tmp_path / mc.CONFIG_FILENAME).read_text()) == dict(PAYLOAD, labels_offset=1, anchor_sizes=[])
    assert sorted(os.listdir(tmp_path)) == [mc.CONFIG_FILENAME]   # no temp file left behind
    assert os.stat(tmp_path / mc.CONFIG_FILENAME).st_mode & 0o044  # readable by others, like checkpoints


def test_labels_offset_is_optional_and_defaults_to_zero(tmp_path):
    (tmp_path / mc.CONFIG_FILENAME).write_text(json.dumps(PAYLOAD))  # an older file
    assert ModelConfig.load(str(tmp_path)).labels_offset == 0
    CONFIG.save(str(tmp_path))
    assert json.loads((tmp_path / mc.CONFIG_FILENAME).read_text())['labels_offset'] == 0


def test_check_resumable(tmp_path):
    mc.check_resumable(str(tmp_path), CONFIG)                      # nothing saved: nothing to compare
    CONFIG.save(str(tmp_path))
    mc.check_resumable(str(tmp_path), dataclasses.replace(CONFIG, data_format='NCHW', labels_offset=2))
    with pytest.raises(UserError, match=r'its checkpoints are of another model \(num_classes: 3 -> 21\); use a new '
                                        r'--train_dir \(.*\) or delete them to start again'):
        mc.check_resumable(str(tmp_path), dataclasses.replace(CONFIG, num_classes=21))


def test_check_resumable_after_a_class_is_added_says_how_to_keep_the_training(tmp_path):
    """A new class changes the class heads only: the refusal gives the flags that train on from the old
    checkpoints in a new train_dir (README section 6), not just 'start again'."""
    CONFIG.save(str(tmp_path))
    heads = ','.join(f'ssd_300_vgg/block{b}_box/conv_cls' for b in (4, 7, 8, 9, 10, 11))
    with pytest.raises(UserError) as refused:
        mc.check_resumable(str(tmp_path), dataclasses.replace(CONFIG, num_classes=4,
                                                              class_names=CONFIG.class_names + ('jar',)))
    assert str(refused.value).endswith(
        f'; use a new --train_dir (to keep what they learned, train there from them with --checkpoint_path={tmp_path} '
        f'--checkpoint_exclude_scopes={heads}) or delete them to start again')


def test_the_train_on_hint_excludes_the_class_heads_of_the_network_its_flags_build(tmp_path):
    """Saved as SSD300, resumed as SSD512 with a class added: the hint's flags rebuild SSD300, so its exclude
    scopes are SSD300's heads, not the SSD512 heads of the refused run."""
    CONFIG.save(str(tmp_path))
    heads = ','.join(f'ssd_300_vgg/block{b}_box/conv_cls' for b in (4, 7, 8, 9, 10, 11))
    with pytest.raises(UserError) as refused:
        mc.check_resumable(str(tmp_path), dataclasses.replace(CONFIG, model_name='ssd_512_vgg', num_classes=4,
                                                              class_names=CONFIG.class_names + ('jar',)))
    assert f'--checkpoint_exclude_scopes={heads} --model_name=ssd_300_vgg)' in str(refused.value)
    # With this run's anchor sizes, made for SSD512's 7 layers: the hint rebuilds SSD300 with the saved ones.
    sizes = (20.0, 51.0, 133.0, 215.0, 296.0, 378.0, 460.0, 542.0)
    with pytest.raises(UserError) as refused:
        mc.check_resumable(str(tmp_path), dataclasses.replace(CONFIG, model_name='ssd_512_vgg', num_classes=4,
                                                              class_names=CONFIG.class_names + ('jar',),
                                                              anchor_sizes=sizes))
    assert f'--checkpoint_exclude_scopes={heads} --model_name=ssd_300_vgg' in str(refused.value)


def test_check_resumable_names_the_flags_that_resume_another_width(tmp_path):
    dataclasses.replace(CONFIG, depth_multiplier=0.125).save(str(tmp_path))
    with pytest.raises(UserError, match=r'\(depth_multiplier: 0.125 -> 0.5\); resume with --depth_multiplier=0.125 '
                                        r'\(the flags it was trained with\), or use a new --train_dir'):
        mc.check_resumable(str(tmp_path), CONFIG)


def test_resuming_on_other_classes_of_the_same_count_is_refused(tmp_path):
    """Reconverted with another class order (or another dataset): the checkpoints would load, the labels swapped."""
    CONFIG.save(str(tmp_path))
    swapped = dataclasses.replace(CONFIG, class_names=('none', 'box', 'can'))
    with pytest.raises(UserError) as refused:
        mc.check_resumable(str(tmp_path), swapped)
    assert str(refused.value) == (
        f"--train_dir={tmp_path}: its checkpoints learned other classes than this dataset's (label 1 is 'box' in the "
        f"dataset, 'can' in the model; label 2 is 'can' in the dataset, 'box' in the model); convert the records with "
        f"a labels file listing can, box in that order, or use a new --train_dir (if only the names changed, not the "
        f"objects, edit class_names in {tmp_path / mc.CONFIG_FILENAME})")
    assert json.loads((tmp_path / mc.CONFIG_FILENAME).read_text())['class_names'] == ['none', 'can', 'box']


def test_fine_tuning_from_a_run_on_other_classes_is_warned_unless_its_class_heads_are_left_out(tmp_path):
    prefix = str(tmp_path / 'model.ckpt-40')
    CONFIG.save(str(tmp_path))
    assert mc.pretrained_mismatch_warning(prefix, CONFIG) is None
    other = dataclasses.replace(CONFIG, class_names=('none', 'can', 'bag'))
    heads = ','.join(f'ssd_300_vgg/{layer}_box/conv_cls'
                     for layer in ('block4', 'block7', 'block8', 'block9', 'block10', 'block11'))
    assert mc.pretrained_mismatch_warning(prefix, other) == (
        f"warning: {prefix} learned other classes (label 2 is 'bag' in the dataset, 'box' in the model; its "
        f"model_config.json): each class would start from another's scores. To train on its classes, convert the "
        f"records with a labels file listing can, box in that order; to learn new ones, leave its class heads out "
        f"with --checkpoint_exclude_scopes={heads}")
    assert mc.pretrained_mismatch_warning(prefix, other, exclude_scopes=heads.split(',')) is None
    assert mc.pretrained_mismatch_warning(prefix, other, exclude_scopes=['ssd_300_vgg/block4_box']) is not None


def test_fine_tuning_from_a_run_of_other_width_or_anchor_sizes_is_warned(tmp_path):
    """A stage-2 run from a train_dir: its fitted anchor sizes would load silently into the built-in ones."""
    prefix = str(tmp_path / 'model.ckpt-40')
    assert mc.pretrained_mismatch_warning(prefix, CONFIG) is None            # no model_config.json: published
    dataclasses.replace(CONFIG, anchor_sizes=(20, 40, 90, 150, 200, 260, 310)).save(str(tmp_path))
    assert mc.pretrained_mismatch_warning(prefix, dataclasses.replace(CONFIG, num_classes=21)) == (
        f'warning: {prefix} was trained with --anchor_sizes=20,40,90,150,200,260,310 (its model_config.json), which '
        f"this run's flags do not give: add them to train on from it")
    dataclasses.replace(CONFIG, depth_multiplier=0.125).save(str(tmp_path))
    assert '--depth_multiplier=0.125 (its model_config.json)' in mc.pretrained_mismatch_warning(prefix, CONFIG)
    assert mc.pretrained_mismatch_warning(prefix, dataclasses.replace(CONFIG, depth_multiplier=0.125)) is None


def _save_checkpoint(prefix, names):
    with tf.Graph().as_default():
        variables = [tf.Variable(0.0, name=name) for name in names]
        with tf.Session() as session:
            session.run(tf.variables_initializer(variables))
            tf.train.Saver(variables).save(session, prefix, write_meta_graph=False, write_state=False)


def test_refit_advice_without_model_config_json_names_the_model_of_the_checkpoint_s_scope(tmp_path):
    """A bare SSD512 checkpoint evaluated as SSD300 (the default): its scope tells --model_name."""
    own, other = str(tmp_path / 'own' / 'model.ckpt-40'), str(tmp_path / 'other' / 'model.ckpt-40')
    _save_checkpoint(own, ['ssd_300_vgg/conv1/conv1_1/weights', 'global_step'])
    _save_checkpoint(other, ['ssd_512_vgg/conv1/conv1_1/weights', 'global_step'])
    assert CONFIG.refit_advice(own) == ('pass the training settings (--model_name, --num_classes, --depth_multiplier, '
                                        '--anchor_set) or keep model_config.json beside the checkpoint')
    assert CONFIG.refit_advice(other) == ('its variables are under ssd_512_vgg: pass --model_name=ssd_512_vgg with its '
                                          'other training settings (--num_classes, --depth_multiplier, --anchor_set), '
                                          'or keep model_config.json beside the checkpoint')


def test_refit_advice_names_what_model_config_json_says(tmp_path):
    prefix = str(tmp_path / 'model.ckpt-40')
    dataclasses.replace(CONFIG, depth_multiplier=0.125).save(str(tmp_path))
    assert CONFIG.refit_advice(prefix) == ('its model_config.json says depth_multiplier=0.125: leave '
                                           '--depth_multiplier out')
    CONFIG.save(str(tmp_path))
    assert CONFIG.refit_advice(prefix) == ('it is not the checkpoint its model_config.json describes (copied from '
                                           'another run?)')


def test_absent_config_is_none(tmp_path):
    assert ModelConfig.load(str(tmp_path)) is None
    assert ModelConfig.load(str(tmp_path / 'model.ckpt-5')) is None


@pytest.mark.parametrize('text, problem', [
    ('{not json', 'not valid JSON'),
    ('[1, 2]', 'expected a JSON object'),
    (json.dumps({'model_name': 'ssd_300_vgg'}), 'missing num_classes'),
    (json.dumps(dict(PAYLOAD, class_names=['none'])), 'class_names must list num_classes'),
    (json.dumps(dict(PAYLOAD, anchor_set='yolo')), 'anchor_set=yolo: use ssd_tensorflow or caffe'),
    (json.dumps(dict(PAYLOAD, data_format='NWHC')), 'data_format=NWHC: use NHWC or NCHW'),
    (json.dumps(dict(PAYLOAD, image_size=[300, 400])), r'image_size=\(300, 400\): must be \[side, side\]'),
])
def test_bad_file_is_one_line_naming_it(tmp_path, text, problem):
    (tmp_path / mc.CONFIG_FILENAME).write_text(text)
    with pytest.raises(UserError, match=problem) as raised:
        ModelConfig.load(str(tmp_path))
    assert str(tmp_path / mc.CONFIG_FILENAME) in str(raised.value)


@pytest.mark.parametrize('change, message', [
    ({'model_name': 'ssd_7'}, '--model_name=ssd_7: unknown; use one of ssd_300_vgg, ssd_512_vgg'),
    ({'depth_multiplier': 0}, '--depth_multiplier=0: must be > 0'),
    ({'labels_offset': -1}, '--labels_offset=-1: must be >= 0'),
])
def test_validate_names_the_flag(change, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(CONFIG, **change).validate()


def test_build_network_is_the_configured_one():
    net = CONFIG.build_network()
    assert (net.num_classes, net.depth_multiplier, net.anchor_set, net.default_image_size) == (
        3, 0.5, 'ssd_tensorflow', 300)


def test_architecture_differences_ignore_data_format_and_names():
    other = dataclasses.replace(CONFIG, num_classes=21, depth_multiplier=1.0, data_format='NCHW',
                                class_names=('none',) * 21)
    assert CONFIG.architecture_differences(other) == ['num_classes: 3 -> 21', 'depth_multiplier: 0.5 -> 1.0']
    assert CONFIG.architecture_differences(dataclasses.replace(CONFIG, image_size=(300, 300))) == []
