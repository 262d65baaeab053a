"""Clones: variables shared and placed once; the loss and gradients are those of one clone on the whole batch."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from nets import nets_factory
from utils import clones
from utils.errors import UserError

from tests.gradient_checks import assert_gradients_match

NUM_CLASSES = 4
WEIGHT_DECAY = 0.01


def _batch(net, batch_size, seed=0):
    """Random mean-subtracted images and anchor targets with some positives per image."""
    rng = np.random.RandomState(seed)
    num_anchors = len(net.anchors)
    labels = np.zeros([batch_size, num_anchors], np.int64)
    for row in range(batch_size):
        positives = rng.choice(num_anchors, 20 + 10 * row, replace=False)
        labels[row, positives] = rng.randint(1, NUM_CLASSES, len(positives))
        labels[row, rng.choice(num_anchors, 5, replace=False)] = -1
    # Box targets of a different scale per image: a loss per positive that differs from image to image, so that
    # the mean of per-image normalised losses differs from the batch's (the SSD loss sum grows with the positives).
    target_scale = 1 + 3 * np.arange(batch_size)[:, None, None]
    return {'image': rng.uniform(-120, 120, [batch_size, 300, 300, 3]).astype(np.float32),
            'target_labels': labels,
            'target_loc': (rng.normal(0, 1, [batch_size, num_anchors, 4]) * target_scale).astype(np.float32)}


def test_two_clones_train_as_one_clone_on_the_whole_batch():
    """The images have different positive counts, so averaging per-half losses (each divided by its own count)
    would differ from the batch's loss; the clones divide by the batch's count over 2 and match it."""
    net = nets_factory.get_network('ssd_300_vgg', NUM_CLASSES, depth_multiplier=0.125)
    with tf.Graph().as_default():
        batch = {k: tf.constant(v) for k, v in _batch(net, 2).items()}
        deployment = clones.local_deployment(2, use_gpus=False)
        clone_fn = clones.ssd_clone_fn(net, 'NHWC', clones.LossConfig(weight_decay=WEIGHT_DECAY))
        clone_list = clones.create_clones(clone_fn, clones.ssd_clone_inputs(batch, 2), deployment.device_fns)
        variables = tf.global_variables()
        regularization = tf.losses.get_regularization_losses()
        optimizer = tf.train.GradientDescentOptimizer(1.0)
        total, grads_and_vars = clones.optimize_clones(clone_list, optimizer, regularization)
        # Reference: one clone on the whole batch (reusing the same variables), with the decay term.
        with tf.name_scope('reference'):
            losses, _ = clone_fn(clones.ssd_clone_inputs(batch, 1)[0], True)
            reference_loss = losses['total'] + tf.add_n(regularization)
            reference_grads = tf.gradients(reference_loss, [v for _, v in grads_and_vars])
            halves_mean = tf.add_n([clone_fn({k: v[half:half + 1] for k, v in batch.items()}, True)[0]['total']
                                    for half in range(2)]) / 2 + tf.add_n(regularization)
        assert tf.global_variables() == variables          # references created no variable
        with tf.Session(config=tf.ConfigProto(device_count={'CPU': 2})) as session:
            session.run(tf.global_variables_initializer())
            got_total, got_grads, ref_total, ref_grads, old_mean = session.run(
                [total, [g for g, _ in grads_and_vars], reference_loss, reference_grads, halves_mean])
    assert got_total == pytest.approx(ref_total, rel=1e-5)
    assert abs(old_mean - ref_total) > 1e-3 * ref_total     # the test can tell the two normalisations apart
    assert_gradients_match([v.op.name for _, v in grads_and_vars], got_grads, ref_grads)
    # Variables exist once, on the shared device; each clone computes on its own logical CPU.
    names = [v.op.name for v in variables]
    assert len(names) == len(set(names)) and not any('clone' in name for name in names)
    assert len(regularization) == len([n for n in names if n.endswith('/weights')])
    assert {v.device for v in variables} == {'/device:CPU:0'}


def test_clone_ops_run_on_their_devices():
    net = nets_factory.get_network('ssd_300_vgg', NUM_CLASSES, depth_multiplier=0.125)
    with tf.Graph().as_default() as graph:
        batch = {k: tf.constant(v) for k, v in _batch(net, 2).items()}
        deployment = clones.local_deployment(2, use_gpus=False)
        clones.create_clones(clones.ssd_clone_fn(net, 'NHWC', clones.LossConfig(weight_decay=0.0)), clones.split_batch(batch, 2),
                             deployment.device_fns)
        convs = [op for op in graph.get_operations() if op.type == 'Conv2D']
    by_clone = {index: {op.device for op in convs if op.name.startswith(f'clone_{index}/')} for index in (0, 1)}
    assert by_clone == {0: {'/device:CPU:0'}, 1: {'/device:CPU:1'}}


def test_split_batch_gives_consecutive_slices():
    with tf.Graph().as_default(), tf.Session() as session:
        pieces = clones.split_batch({'x': tf.range(6)}, 3)
        assert [list(v) for v in session.run([p['x'] for p in pieces])] == [[0, 1], [2, 3], [4, 5]]


def test_mean_clone_losses():
    with tf.Graph().as_default(), tf.Session() as session:
        fake = [clones.Clone(i, f'clone_{i}', None, {'total': tf.constant(v)}, None) for i, v in enumerate((1., 4.))]
        assert session.run(clones.mean_clone_losses(fake))['total'] == pytest.approx(2.5)


@pytest.mark.parametrize('args, message', [
    ((32, 3, 0, False), '--batch_size=32 is not divisible by --num_clones=3'),
    ((8, 0, 0, False), '--num_clones=0: must be >= 1'),
    ((8, 4, 2, False), '--num_clones=4 but only 2 GPU'),
])
def test_clone_settings_errors(args, message):
    with pytest.raises(UserError, match=message):
        clones.check_clone_settings(*args)


def test_clone_settings_accept_cpu_clones_beside_gpus():
    clones.check_clone_settings(8, 4, 2, True)


def test_local_deployment_devices():
    cpu = clones.local_deployment(2, use_gpus=False)
    assert (cpu.clone_devices, cpu.cpu_devices, cpu.master, cpu.is_chief) == (
        ['/device:CPU:0', '/device:CPU:1'], 2, '', True)
    gpu = clones.local_deployment(1, use_gpus=True)
    assert (gpu.clone_devices, gpu.cpu_devices, clones.variables_device(1, True)) == (
        ['/device:GPU:0'], 1, '/device:GPU:0')
    assert clones.variables_device(2, True) == '/device:CPU:0'
