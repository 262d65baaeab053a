"""utils/checkpoints.py: finding a checkpoint, exclude scopes, the vgg_16 -> ssd_300_vgg scope mapping, and the
messages (with their remedies) for checkpoints that do not fit."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import nets_factory
from utils import checkpoints
from utils.errors import UserError

DEPTH = 0.125


def _build_ssd(num_classes):
    """SSD300 at a small depth in the current graph; returns (net, its model variables)."""
    net = nets_factory.get_network('ssd_300_vgg', num_classes, depth_multiplier=DEPTH)
    with slim.arg_scope(net.arg_scope()):
        net.build(tf.zeros([1, 300, 300, 3]), is_training=False)
    return net, tf.model_variables(net.scope)


def _save(prefix, values):
    """Write a checkpoint holding exactly `values` ({name: array}); returns the saved arrays."""
    with tf.Graph().as_default():
        variables = [tf.Variable(value, name=name) for name, value in values.items()]
        with tf.Session() as session:
            session.run(tf.variables_initializer(variables))
            tf.train.Saver(variables).save(session, prefix, write_meta_graph=False, write_state=False)
    return values


def _random_values(variables, rename=lambda name: name, seed=1):
    rng = np.random.RandomState(seed)
    return {rename(v.op.name): rng.normal(0, 1, v.shape.as_list()).astype(np.float32) for v in variables}


@pytest.fixture(scope='module')
def ssd_checkpoint_21(tmp_path_factory):
    """A published-style ssd_300_vgg checkpoint (21 classes) at the test depth."""
    prefix = str(tmp_path_factory.mktemp('published') / 'ssd_300_vgg.ckpt')
    with tf.Graph().as_default():
        _, variables = _build_ssd(21)
        values = _random_values(variables)
    _save(prefix, values)
    return prefix, values


def test_fine_tune_other_num_classes_with_excluded_box_heads(ssd_checkpoint_21):
    prefix, values = ssd_checkpoint_21
    with tf.Graph().as_default():
        net, variables = _build_ssd(5)
        with pytest.raises(UserError) as raised:
            checkpoints.plan_pretrained_restore(prefix, variables, net.scope)
        message = str(raised.value)
        assert 'shapes differ' in message
        assert 'block10_box/conv_cls/biases [84] in the checkpoint, [20] in the model' in message
        assert message.endswith('--checkpoint_exclude_scopes=' + ','.join(
            f'ssd_300_vgg/block{i}_box/conv_cls' for i in (10, 11, 4, 7, 8, 9)))
        excluded = [f'{scope}/conv_cls' for scope in net.box_head_scopes]
        plan = checkpoints.plan_pretrained_restore(prefix, variables, net.scope, exclude_scopes=excluded)
        assert len(plan.excluded) == 12 and not plan.missing
        assert sorted(plan.var_map) == sorted(n for n in values if '/conv_cls/' not in n)
        init_fn = checkpoints.make_init_fn(prefix, plan)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            init_fn(session)
            got = dict(zip([v.op.name for v in variables], session.run(variables)))
    for name, value in got.items():
        if '/conv_cls/' in name:
            assert value.shape != values[name].shape
        else:
            np.testing.assert_array_equal(value, values[name])


def test_vgg_16_trunk_mapped_onto_the_ssd_scope(tmp_path):
    prefix = str(tmp_path / 'vgg_16.ckpt')
    with tf.Graph().as_default():
        net, variables = _build_ssd(5)
        trunk = [v for v in variables if v.op.name.split('/')[1].startswith(('conv1', 'conv2', 'conv3', 'conv4',
                                                                           'conv5'))]
        values = _random_values(trunk, lambda name: name.replace('ssd_300_vgg/', 'vgg_16/', 1))
        values['vgg_16/fc8/weights'] = np.zeros([1, 1, 8, 10], np.float32)  # classifier layers the SSD lacks
        _save(prefix, values)
        with pytest.raises(UserError, match='none of this model.s variables.*scopes: vgg_16.*--checkpoint_model_scope'):
            checkpoints.plan_pretrained_restore(prefix, variables, net.scope, ignore_missing_vars=True)
        # SSD-Tensorflow's README fine-tunes its own SSD checkpoint with --checkpoint_model_scope=vgg_16 too.
        ssd_prefix = str(tmp_path / 'model.ckpt-6')
        _save(ssd_prefix, dict(_random_values(variables), global_step=np.int64(6), beta1_power=np.float32(0.9),
                               beta2_power=np.float32(0.999)))
        with pytest.raises(UserError) as refused:
            checkpoints.plan_pretrained_restore(ssd_prefix, variables, net.scope, 'vgg_16')
        assert str(refused.value) == (f'{ssd_prefix}: its variables are under ssd_300_vgg, this model\'s own scope, '
                                      f'not vgg_16: leave out --checkpoint_model_scope=vgg_16')
        with pytest.raises(UserError, match=r'lacks 45 variable\(s\).*--ignore_missing_vars'):
            checkpoints.plan_pretrained_restore(prefix, variables, net.scope, 'vgg_16')
        exclude = ['ssd_300_vgg/conv6', 'ssd_300_vgg/conv7'] + [f'ssd_300_vgg/block{i}' for i in (8, 9, 10, 11)]
        exclude += net.box_head_scopes
        plan = checkpoints.plan_pretrained_restore(prefix, variables, net.scope, 'vgg_16', exclude)
        assert sorted(plan.var_map) == sorted(n for n in values if '/fc8/' not in n) and len(plan.var_map) == 26
        assert all(plan.var_map[name].op.name == name.replace('vgg_16/', 'ssd_300_vgg/', 1) for name in plan.var_map)
        init_fn = checkpoints.make_init_fn(prefix, plan)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            init_fn(session)
            for name, variable in plan.var_map.items():
                np.testing.assert_array_equal(session.run(variable), values[name])


def test_a_checkpoint_of_another_width_is_not_told_to_exclude_every_layer(ssd_checkpoint_21):
    """Layers besides the class heads differ: excluding them all would be training from scratch."""
    prefix, _ = ssd_checkpoint_21
    with tf.Graph().as_default():
        net = nets_factory.get_network('ssd_300_vgg', 21, depth_multiplier=DEPTH * 2)
        with slim.arg_scope(net.arg_scope()):
            net.build(tf.zeros([1, 300, 300, 3]), is_training=False)
        with pytest.raises(UserError) as raised:
            checkpoints.plan_pretrained_restore(prefix, tf.model_variables(net.scope), net.scope)
    message = str(raised.value)
    assert 'shapes differ' in message and '--checkpoint_exclude_scopes' not in message
    assert message.endswith('layers besides the class heads differ, so it is another network or width: train with '
                            'the flags it was trained with (--model_name, --depth_multiplier, --anchor_set)')


def test_stale_train_dir_names_variables_and_remedy(ssd_checkpoint_21):
    prefix, _ = ssd_checkpoint_21
    with tf.Graph().as_default():
        _, variables = _build_ssd(5)
        with pytest.raises(UserError) as raised:
            checkpoints.check_resume_compatible(prefix, variables)
    message = str(raised.value)
    assert 'ssd_300_vgg/block10_box/conv_cls/biases [84] in the checkpoint, [20] in the model' in message
    assert 'use a new --train_dir, or delete the old checkpoints' in message and '\n' not in message
    with tf.Graph().as_default():
        _, variables = _build_ssd(21)
        checkpoints.check_resume_compatible(prefix, variables)
        # Only optimizer slots of stored weights missing: the trainable scopes or the optimizer changed.
        tf.Variable(0.0, name='ssd_300_vgg/conv1/conv1_1/weights/Adam')
        with pytest.raises(UserError, match=r'holds the weights but not the optimizer state this run needs '
                                            r'\(ssd_300_vgg/conv1/conv1_1/weights/Adam absent from the checkpoint\): '
                                            r'it was trained with other --trainable_scopes or another --optimizer\. '
                                            r'.* in a new --train_dir with --checkpoint_path='):
            checkpoints.check_resume_compatible(prefix, tf.global_variables())


def test_resuming_with_adam_a_checkpoint_trained_with_sgd_names_the_optimizer(ssd_checkpoint_21):
    """An SGD run's checkpoint holds every weight but none of Adam's variables: its slots and its own
    beta1_power and beta2_power. The remedy is another --optimizer, not deleting the checkpoints."""
    prefix, _ = ssd_checkpoint_21
    with tf.Graph().as_default():
        _, variables = _build_ssd(21)
        tf.train.AdamOptimizer(0.001).minimize(tf.add_n([tf.reduce_sum(v) for v in variables]))
        assert 'beta1_power' in [v.op.name for v in tf.global_variables()]
        with pytest.raises(UserError) as raised:
            checkpoints.check_resume_compatible(prefix, tf.global_variables())
    message = str(raised.value)
    assert 'holds the weights but not the optimizer state this run needs (beta1_power absent' in message
    assert 'another --optimizer' in message and 'delete the old checkpoints' not in message


def test_resuming_an_adam_checkpoint_with_sgd_says_its_adam_state_is_dropped(tmp_path):
    """SGD needs none of Adam's 2 accumulators and 2 slots per weight: the run resumes, saying they go."""
    prefix = str(tmp_path / 'model.ckpt')
    with tf.Graph().as_default():
        _, variables = _build_ssd(5)
        tf.train.get_or_create_global_step()
        tf.train.AdamOptimizer(0.001).minimize(tf.add_n([tf.reduce_sum(v) for v in variables]))
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            prefix = tf.train.Saver().save(session, prefix, global_step=0)
    said = []
    with tf.Graph().as_default():
        _, variables = _build_ssd(5)
        tf.train.get_or_create_global_step()
        assert checkpoints.restore_chain(checkpoints.RestoreConfig(resume_from=prefix), variables, 'ssd_300_vgg',
                                         log_fn=said.append) is None
    assert said[0].startswith(f'Resuming from {prefix} at step 0: all {len(variables) + 1} variables')
    assert said[0].endswith(f'; warning: {2 * len(variables) + 2} of its variables are not used (beta1_power, '
                            f'beta2_power, {sorted(v.op.name for v in variables)[0]}/Adam (and '
                            f'{2 * len(variables) - 1} more)), the state of another --optimizer, '
                            f'--trainable_scopes or --moving_average_decay, and this run\'s checkpoints will not '
                            f'hold them')


def test_resuming_with_moving_averages_a_checkpoint_trained_without_names_that_flag(ssd_checkpoint_21):
    """--moving_average_decay added on resume: the checkpoint lacks the averages, not any optimizer's state."""
    prefix, _ = ssd_checkpoint_21
    with tf.Graph().as_default():
        _, variables = _build_ssd(21)
        tf.train.ExponentialMovingAverage(0.999).apply(variables)
        with pytest.raises(UserError) as raised:
            checkpoints.check_resume_compatible(prefix, tf.global_variables())
    message = str(raised.value)
    assert ('holds the weights but not the moving averages this run needs (ssd_300_vgg/block10/conv1x1/biases/'
            'ExponentialMovingAverage absent from the checkpoint;') in message
    assert 'it was trained without --moving_average_decay. Resume with its flags' in message


def test_restore_chain_logs_the_source_and_the_restored_count(ssd_checkpoint_21):
    prefix, values = ssd_checkpoint_21
    said = []
    with tf.Graph().as_default():
        net, variables = _build_ssd(5)
        with pytest.raises(UserError, match="--checkpoint_exclude_scopes: 'ssd_300_vgg/conv_cls' matches no model "
                                            r"variable \(valid scopes: ssd_300_vgg/block10, ssd_300_vgg/block10_box, "):
            checkpoints.restore_chain(checkpoints.RestoreConfig(pretrained=prefix, exclude_scopes=('ssd_300_vgg/conv_cls',)),
                                      variables, net.scope)
        heads = [f'{scope}/conv_cls' for scope in net.box_head_scopes]
        init_fn = checkpoints.restore_chain(checkpoints.RestoreConfig(pretrained=prefix, exclude_scopes=tuple(heads)),
                                            variables, net.scope, log_fn=said.append)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            init_fn(session)
    kept = len([name for name in values if '/conv_cls/' not in name])
    assert said == [f'Fine-tuning from {prefix}: {kept} variables restored, 12 excluded by '
                    f'--checkpoint_exclude_scopes, 0 missing from it and ignored; the other 12 start from their '
                    'initialisers',
                    f'Restored {kept} variables from {prefix}']


def test_format_mismatches_puts_shape_differences_first_and_caps_the_list():
    mismatch = checkpoints.CheckpointMismatch
    items = [mismatch('a/w', [3], None), mismatch('b/w', [2, 2], [2, 5]), mismatch('c/w', [1], None),
             mismatch('d/w', [4], [8]), mismatch('e/w', [1], None)]
    assert checkpoints.format_mismatches(items) == (
        'b/w [2, 5] in the checkpoint, [2, 2] in the model; d/w [8] in the checkpoint, [4] in the model; '
        'a/w absent from the checkpoint (and 2 more)')
    assert checkpoints.format_mismatches(items[:1], limit=1) == 'a/w absent from the checkpoint'


def test_resolve_pretrained(tmp_path, ssd_checkpoint_21):
    prefix, _ = ssd_checkpoint_21
    assert checkpoints.resolve_checkpoint(os.path.dirname(prefix)) == prefix        # folder with one checkpoint
    assert checkpoints.resolve_checkpoint(prefix + '.index') == prefix              # a file of the checkpoint
    assert checkpoints.resolve_checkpoint(prefix + '.data-00000-of-00001') == prefix
    empty = tmp_path / 'pre_trained'
    empty.mkdir()
    (empty / '.gitkeep').write_text('')
    assert checkpoints.resolve_checkpoint(str(empty)) is None                       # empty folder: from scratch
    with pytest.raises(UserError, match=r'--pretrained_path=.*nowhere: no such checkpoint or directory'):
        checkpoints.resolve_checkpoint(str(tmp_path / 'nowhere'))
    assert checkpoints.resolve_checkpoint(str(tmp_path / 'nowhere'), missing_ok=True) is None
    (empty / 'garbage.ckpt').write_text('not a checkpoint')
    with pytest.raises(UserError, match='garbage.ckpt: not a readable TensorFlow checkpoint'):
        checkpoints.resolve_checkpoint(str(empty))
    zipped = tmp_path / 'ssd_300_vgg.ckpt.zip'                  # the published checkpoint as downloaded
    zipped.write_bytes(b'PK\x03\x04 not unpacked')
    with pytest.raises(UserError, match=r'ssd_300_vgg.ckpt.zip: not a readable TensorFlow checkpoint \(.*\); it is '
                                        r'an archive: unpack it and name the checkpoint inside$'):
        checkpoints.read_variable_shapes(str(zipped), '--pretrained_path')
    _save(str(empty / 'second.ckpt'), {'w': np.zeros(2, np.float32)})
    with pytest.raises(UserError, match='holds several checkpoints'):
        checkpoints.resolve_checkpoint(str(empty))


def test_resolve_pretrained_follows_the_state_file(tmp_path):
    with tf.Graph().as_default():
        weight = tf.Variable(1.0, name='w')
        saver = tf.train.Saver()
        with tf.Session() as session:
            session.run(weight.initializer)
            for step in (1, 2):
                saver.save(session, str(tmp_path / 'model.ckpt'), global_step=step)
    assert checkpoints.resolve_checkpoint(str(tmp_path)) == str(tmp_path / 'model.ckpt-2')
    assert checkpoints.latest_train_checkpoint(str(tmp_path)) == str(tmp_path / 'model.ckpt-2')
    assert checkpoints.latest_train_checkpoint(str(tmp_path / 'absent')) is None


def test_scopes_match_whole_name_components():
    assert checkpoints.split_scopes(' a/b, c/ ,') == ['a/b', 'c']
    assert checkpoints.in_scopes('ssd_300_vgg/block1/w', ['ssd_300_vgg/block1'])
    assert not checkpoints.in_scopes('ssd_300_vgg/block10/w', ['ssd_300_vgg/block1'])


def test_trainable_scopes():
    with tf.Graph().as_default():
        _build_ssd(3)
        chosen = checkpoints.variables_to_train('ssd_300_vgg/block4_box, ssd_300_vgg/conv7')
        assert {v.op.name.split('/')[1] for v in chosen} == {'block4_box', 'conv7'}
        assert len(checkpoints.variables_to_train(None)) == len(tf.trainable_variables())
        with pytest.raises(UserError, match="--trainable_scopes: 'ssd_300_vgg/blok8' matches no trainable variable "
                                            r"\(valid scopes: ssd_300_vgg/block10, .*, ssd_300_vgg/conv7\)"):
            checkpoints.variables_to_train('ssd_300_vgg/blok8')
