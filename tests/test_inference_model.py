"""Rebuilding a trained network for inference: checkpoint resolution (utils/checkpoints.py), configuration
(model_config.inference_config), moving-average restore, mismatches."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets.dataset_info import VOC_CLASSES
from utils import checkpoints
from utils.model_config import ModelConfig, inference_config
from tests import inference_fixtures as fixtures
from utils.errors import UserError

WEIGHT = 'ssd_300_vgg/conv1/conv1_1/weights'


@pytest.fixture(scope='module')
def train_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp('inference') / 'train'
    fixtures.make_checkpoint(str(directory))
    return directory


def _network_in_new_graph(config):
    network = config.build_network()
    with slim.arg_scope(network.arg_scope()):
        network.build(tf.zeros([1, 300, 300, 3]), is_training=False)
    return network


def test_resolve_checkpoint_from_directory_prefix_or_file(train_dir, tmp_path):
    prefix = str(train_dir / 'model.ckpt-7')
    assert checkpoints.require_checkpoint(str(train_dir)) == prefix
    assert checkpoints.require_checkpoint(prefix) == prefix
    assert checkpoints.require_checkpoint(prefix + '.index') == prefix
    with pytest.raises(UserError, match='no checkpoint in this directory'):
        checkpoints.require_checkpoint(str(tmp_path))
    with pytest.raises(UserError, match='no such checkpoint'):
        checkpoints.require_checkpoint(str(tmp_path / 'missing.ckpt'))
    assert checkpoints.checkpoint_global_step(prefix) == fixtures.GLOBAL_STEP


def test_config_comes_from_model_config_and_overrides_win(train_dir):
    prefix = str(train_dir / 'model.ckpt-7')
    config = inference_config(prefix, {'anchor_set': None})
    assert (config.num_classes, config.depth_multiplier, config.image_size) == (4, 0.125, (300, 300))
    assert list(config.class_names) == fixtures.CLASS_NAMES and config.names_from_file
    assert config.labels_offset == 0
    overridden = inference_config(prefix, {'num_classes': 3, 'depth_multiplier': 0.25})
    assert overridden.depth_multiplier == 0.25
    assert overridden.class_names == ('none', 'class 1', 'class 2')   # saved names no longer fit
    assert not overridden.names_from_file


def test_checkpoint_without_config_gets_voc_ssd300_defaults(tmp_path):
    config = inference_config(str(tmp_path / 'ssd_300_vgg.ckpt'), {})
    assert config.model_name == 'ssd_300_vgg' and config.num_classes == 21
    assert list(config.class_names) == ['none'] + list(VOC_CLASSES)
    assert config.image_size == (300, 300) and config.depth_multiplier == 1.0
    assert config.labels_offset == 0 and not config.names_from_file


def test_moving_averages_are_restored_when_asked(tmp_path):
    """A checkpoint whose shadow variables hold 2 x the weights: the restored weights are the shadows."""
    config = ModelConfig(num_classes=4, depth_multiplier=0.125)
    prefix = str(tmp_path / 'model.ckpt')
    with tf.Graph().as_default():
        network = _network_in_new_graph(config)
        variables = list(checkpoints.network_variables(network).values())
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
            variables_map = checkpoints.inference_variable_map(prefix, network, use_moving_averages=use_averages)
            with tf.Session() as session:
                checkpoints.restore_for_inference(session, tf.train.Saver(variables_map), prefix, variables_map,
                                                  config)
                restored = session.run(checkpoints.network_variables(network)[WEIGHT])
        np.testing.assert_allclose(restored, factor * stored_weight, rtol=1e-6)


def test_moving_averages_asked_but_absent_is_a_user_error(train_dir):
    prefix = str(train_dir / 'model.ckpt-7')
    config = inference_config(prefix, {})
    with tf.Graph().as_default():
        network = _network_in_new_graph(config)
        with pytest.raises(UserError, match='holds no moving averages'):
            checkpoints.inference_variable_map(prefix, network, use_moving_averages=True)


def test_mismatched_checkpoint_is_one_line_naming_variable_and_settings(train_dir):
    prefix = str(train_dir / 'model.ckpt-7')
    config = inference_config(prefix, {'num_classes': 6})
    with tf.Graph().as_default():
        network = _network_in_new_graph(config)
        with pytest.raises(UserError) as caught:
            checkpoints.check_checkpoint_fits(prefix, checkpoints.network_variables(network), config)
    message = str(caught.value)
    assert '\n' not in message and message.startswith(prefix + ': does not fit')
    assert 'num_classes=6' in message and 'conv_cls' in message
    assert message.endswith('; its model_config.json says num_classes=%d: leave --num_classes out'
                            % len(fixtures.CLASS_NAMES))
    assert os.path.basename(prefix) in message
