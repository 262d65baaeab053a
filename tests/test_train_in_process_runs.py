"""train_ssd_network.py's steps in-process through the real pipeline: a resumed run keeps the optimizer
state (and never looks at --pretrained_path), and two clones train on two logical CPU devices."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tests.train_fixtures import SMALL, make_tiny_dataset, train_in_process as run_steps


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    return make_tiny_dataset(str(tmp_path_factory.mktemp('data')))


def train_in_process(records, train_dir, *args):
    """The steps main runs (no signal handlers, no training thread)."""
    return run_steps([f'--dataset_dir={records}', f'--train_dir={train_dir}', '--save_interval_secs=0',
                      '--log_every_n_steps=0'] + SMALL + list(args))


def test_resume_keeps_the_adam_state_and_ignores_a_missing_pretrained_path(records, tmp_path):
    train_dir = str(tmp_path / 'train')
    empty = tmp_path / 'pre'
    empty.mkdir()
    train_in_process(records, train_dir, f'--pretrained_path={empty}', '--max_number_of_steps=2')
    first = tf.train.load_checkpoint(tf.train.latest_checkpoint(train_dir))
    step_fn = train_in_process(records, train_dir, '--pretrained_path=/no/such/checkpoint.ckpt',
                               '--max_number_of_steps=3')
    assert [step for step, _ in step_fn.loss_history] == [3]
    latest = tf.train.latest_checkpoint(train_dir)
    assert latest.endswith('model.ckpt-3')
    second = tf.train.load_checkpoint(latest)
    # Adam's beta_power starts at beta and is multiplied by beta after each step: beta^(t + 1) after t steps.
    # Re-initialised on resume, the third step would leave beta^2, not beta^4.
    for name, beta in (('beta1_power', 0.9), ('beta2_power', 0.999)):
        np.testing.assert_allclose(first.get_tensor(name), beta ** 3, rtol=1e-6)
        np.testing.assert_allclose(second.get_tensor(name), beta ** 4, rtol=1e-6)


def test_a_lost_state_file_resumes_the_newest_checkpoint_instead_of_saving_over_it(records, tmp_path):
    train_dir = tmp_path / 'train'
    train_in_process(records, str(train_dir), f'--pretrained_path={tmp_path}', '--max_number_of_steps=2')
    (train_dir / 'checkpoint').unlink()        # a crash or a partial copy; the checkpoint files are all there
    step_fn = train_in_process(records, str(train_dir), f'--pretrained_path={tmp_path}', '--max_number_of_steps=3')
    assert [step for step, _ in step_fn.loss_history] == [3]
    assert tf.train.latest_checkpoint(str(train_dir)).endswith('model.ckpt-3')
    assert 'warning: resume ' in (train_dir / 'training_config.txt').read_text()


def test_two_clones_on_two_logical_cpus(records, tmp_path):
    train_dir = tmp_path / 'train'
    step_fn = train_in_process(records, str(train_dir), f'--pretrained_path={tmp_path}', '--num_clones=2',
                               '--max_number_of_steps=2')
    assert [step for step, _ in step_fn.loss_history] == [1, 2]
    assert all(np.isfinite(loss) and loss > 0 for _, loss in step_fn.loss_history)
    report = (train_dir / 'training_config.txt').read_text()
    assert '2 clone(s) on /device:CPU:0, /device:CPU:1; batch 4 = 2 x 2 per clone' in report
    names = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(train_dir))).get_variable_to_shape_map()
    assert 'ssd_300_vgg/conv1/conv1_1/weights' in names
    assert not [name for name in names if 'clone' in name]   # the clones share one set of variables
    assert os.path.isfile(train_dir / 'model_config.json')
