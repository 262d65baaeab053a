"""utils/inference_model.py: checkpoint resolution, configuration, moving-average restore, mismatches."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets.dataset_info import VOC_CLASSES
from utils import inference_model
from nets import nets_factory
from tests import inference_fixtures as fixtures
from utils.errors import UserError

WEIGHT = 'ssd_300_vgg/conv1/conv1_1/weights'


@pytest.fixture(scope='module')
def train_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp('inference') / 'train'
    fixtures.make_checkpoint(str(directory))
    return directory


def _network_in_new_graph(config):
    network = nets_factory.get_network(config['model_name'], config['num_classes'], config['depth_multiplier'])
    with slim.arg_scope(network.arg_scope()):
        network.build(tf.zeros([1, 300, 300, 3]), is_training=False)
    return network


def test_resolve_checkpoint_from_directory_prefix_or_file(train_dir, tmp_path):
    prefix = str(train_dir / 'model.ckpt-7')
    assert inference_model.resolve_checkpoint(str(train_dir)) == prefix
    assert inference_model.resolve_checkpoint(prefix) == prefix
    assert inference_model.resolve_checkpoint(prefix + '.index') == prefix
    with pytest.raises(UserError, match='no checkpoint in this directory'):
        inference_model.resolve_checkpoint(str(tmp_path))
    with pytest.raises(UserError, match='no such checkpoint'):
        inference_model.resolve_checkpoint(str(tmp_path / 'missing.ckpt'))
    assert inference_model.checkpoint_global_step(prefix) == fixtures.GLOBAL_STEP


def test_config_comes_from_model_config_and_overrides_win(train_dir):
    prefix = str(train_dir / 'model.ckpt-7')
    config = inference_model.inference_config(prefix, {'anchor_set': None})
    assert (config['num_classes'], config['depth_multiplier'], config['image_size']) == (4, 0.125, [300, 300])
    assert config['class_names'] == fixtures.CLASS_NAMES and config['class_names_saved']
    assert config['labels_offset'] == 0
    overridden = inference_model.inference_config(prefix, {'num_classes': 3, 'depth_multiplier': 0.25})
    assert overridden['depth_multiplier'] == 0.25
    assert overridden['class_names'] == ['none', 'class 1', 'class 2']   # saved names no longer fit
    assert not overridden['class_names_saved']


def test_checkpoint_without_config_gets_voc_ssd300_defaults(tmp_path):
    config = inference_model.inference_config(str(tmp_path / 'ssd_300_vgg.ckpt'), {})
    assert config['model_name'] == 'ssd_300_vgg' and config['num_classes'] == 21
    assert config['class_names'] == ['none'] + list(VOC_CLASSES)
    assert config['image_size'] == [300, 300] and config['depth_multiplier'] == 1.0
    assert config['labels_offset'] == 0 and not config['class_names_saved']


def test_moving_averages_are_restored_when_asked(tmp_path):
    """A checkpoint whose shadow variables hold 2 x the weights: the restored weights are the shadows."""
    config = dict(inference_model.MODEL_DEFAULTS, num_classes=4, depth_multiplier=0.125)
    prefix = str(tmp_path / 'model.ckpt')
    with tf.Graph().as_default():
        network = _network_in_new_graph(config)
        variables = list(inference_model.model_variables(network).values())
        averages = tf.train.ExponentialMovingAverage(0.99)
        averages.apply(variables)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            session.run([tf.assign(averages.average(v), 2.0 * v) for v in variables])
            tf.train.Saver().save(session, prefix)
    stored_weight = tf.train.load_variable(prefix, WEIGHT)
    for use_averages, factor in ((True, 2.0), (False, 1.0)):
        with tf.Graph().as_default():
            network = _network_in_new_graph(config)
            variables_map = inference_model.variables_to_restore(prefix, network, use_moving_averages=use_averages)
            with tf.Session() as session:
                inference_model.restore_checkpoint(session, tf.train.Saver(variables_map), prefix, variables_map,
                                                   config)
                restored = session.run(inference_model.model_variables(network)[WEIGHT])
        np.testing.assert_allclose(restored, factor * stored_weight, rtol=1e-6)


def test_moving_averages_asked_but_absent_is_a_user_error(train_dir):
    prefix = str(train_dir / 'model.ckpt-7')
    config = inference_model.inference_config(prefix, {})
    with tf.Graph().as_default():
        network = _network_in_new_graph(config)
        with pytest.raises(UserError, match='holds no moving averages'):
            inference_model.variables_to_restore(prefix, network, use_moving_averages=True)


def test_mismatched_checkpoint_is_one_line_naming_variable_and_settings(train_dir):
    prefix = str(train_dir / 'model.ckpt-7')
    config = inference_model.inference_config(prefix, {'num_classes': 6})
    with tf.Graph().as_default():
        network = _network_in_new_graph(config)
        with pytest.raises(UserError) as caught:
            inference_model.check_checkpoint_fits(prefix, inference_model.model_variables(network), config)
    message = str(caught.value)
    assert '\n' not in message and message.startswith(prefix + ': does not fit')
    assert 'num_classes=6' in message and 'conv_cls' in message
    assert os.path.basename(prefix) in message
