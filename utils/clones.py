"""Model clones for data-parallel training in one process (our stand-in for TF-Slim's model_deploy).

Each clone runs the network on its slice of the batch on its own device; variables are created once (by
clone 0) and shared by the others. The training loss is the mean of the clones' losses plus the
regularisation losses counted once:

    total = (1 / n) * sum_i loss_i + sum(regularization)

and its gradient is summed from per-clone gradients of loss_i / n, each computed on the clone's device.
Each clone's SSD loss is divided by the whole batch's positive count over n (ssd_clone_inputs), so the
mean is the loss of the whole batch: any number of clones trains as one device would on the batch.
"""
import collections
import dataclasses

import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import column_pairs, conv_gradients
from utils.errors import UserError

Clone = collections.namedtuple('Clone', ['index', 'scope', 'device', 'losses', 'outputs'])

# Op types that hold variable state; they go to the variables device, every other op to the clone's.
_VARIABLE_OP_TYPES = frozenset(('Variable', 'VariableV2', 'AutoReloadVariable', 'VarHandleOp',
                                'MutableHashTable', 'MutableHashTableV2', 'MutableHashTableOfTensors',
                                'MutableHashTableOfTensorsV2', 'MutableDenseHashTable',
                                'MutableDenseHashTableV2'))


def check_clone_settings(batch_size, num_clones, num_gpus, clone_on_cpu):
    """UserError when the batch cannot be split evenly or there are fewer GPUs than clones."""
    if num_clones < 1:
        raise UserError(f'--num_clones={num_clones}: must be >= 1')
    if batch_size < 1:
        raise UserError(f'--batch_size={batch_size}: must be >= 1')
    if batch_size % num_clones:
        raise UserError(f'--batch_size={batch_size} is not divisible by --num_clones={num_clones}; '
                        f'each clone takes batch_size / num_clones images')
    if num_gpus and not clone_on_cpu and num_clones > num_gpus:
        raise UserError(f'--num_clones={num_clones} but only {num_gpus} GPU(s) are visible; '
                        f'lower --num_clones or pass --clone_on_cpu')


def compute_devices(num_clones, use_gpus):
    """Local device of each clone: '/device:GPU:i', or '/device:CPU:i' (logical CPU devices; the session
    must create them, see cpu_device_count)."""
    kind = 'GPU' if use_gpus else 'CPU'
    return [f'/device:{kind}:{i}' for i in range(num_clones)]


def cpu_device_count(num_clones, use_gpus):
    """Logical CPU devices the session needs (ConfigProto.device_count['CPU'])."""
    return 1 if use_gpus else num_clones


def variables_device(num_clones, use_gpus):
    """Where shared variables live in one process: the only clone's device, else the first CPU."""
    return '/device:GPU:0' if use_gpus and num_clones == 1 else '/device:CPU:0'


def variables_on(variables_device_name, compute_device):
    """A device function: variable ops on `variables_device_name`, others on `compute_device`; a device
    set explicitly on the op (inner tf.device) wins."""
    def device_fn(op):
        current = tf.DeviceSpec.from_string(op.device or '')
        target = variables_device_name if op.type in _VARIABLE_OP_TYPES else compute_device
        return tf.DeviceSpec.from_string(target).make_merged_spec(current).to_string()
    return device_fn


def split_batch(batch, num_clones):
    """A dict of batched tensors -> num_clones dicts holding consecutive equal slices along axis 0."""
    if num_clones == 1:
        return [dict(batch)]
    pieces = {key: tf.split(value, num_clones, axis=0) for key, value in batch.items()}
    return [{key: pieces[key][i] for key in batch} for i in range(num_clones)]


def ssd_clone_inputs(batch, num_clones):
    """split_batch of an SSD batch; with several clones each slice also holds 'loss_normalizer': the whole
    batch's positive anchor count over num_clones (nets/ssd_losses.py divides the clone's loss by it)."""
    slices = split_batch(batch, num_clones)
    if num_clones > 1:
        with tf.name_scope('loss_normalizer'):
            positives = tf.reduce_sum(tf.cast(batch['target_labels'] > 0, tf.float32))
            for inputs in slices:
                inputs['loss_normalizer'] = positives / float(num_clones)
    return slices


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The SSD loss's settings (nets/ssd_losses.py) and the weight decay of the conv weights."""
    weight_decay: float = 0.0005
    negative_ratio: float = 3.0    # hard negatives kept per positive anchor
    loss_alpha: float = 1.0        # weight of the localisation loss
    label_smoothing: float = 0.0


def special_layers(net, data_format, image_size):
    """(wide, paired): the scope names of the layers of `net` wide enough for nets/conv_gradients.py's NCHW weight
    gradient (none at small depth multipliers), and of those this process computes on column pairs
    (nets/column_pairs.py: 8-channel layers on AVX-512), from the network built once, on one image, in a
    throwaway graph. The training plan also reads no wide layer as "a narrow network", which trains faster on
    single-threaded towers."""
    with tf.Graph().as_default() as graph:
        with slim.arg_scope(net.arg_scope(data_format=data_format)):
            net.build(tf.zeros([1, *image_size, 3]), is_training=True, data_format=data_format)
    return tuple(conv_gradients.wide_layers(graph)), tuple(column_pairs.paired_layers(graph))


def ssd_clone_fn(net, data_format, loss=LossConfig(), weight_gradients_in_nchw=False):
    """clone_fn for create_clones: SSD forward pass on inputs['image'] and its loss components (a LossConfig)
    against inputs['target_labels'] / inputs['target_loc'] (see nets/ssd_losses.py). weight_gradients_in_nchw:
    the convolutions get nets/conv_gradients.py's gradients."""
    def clone_fn(inputs, reuse):
        with slim.arg_scope(net.arg_scope(weight_decay=loss.weight_decay, data_format=data_format)), \
                conv_gradients.override(weight_gradients_in_nchw):
            logits, localisations, end_points = net.build(inputs['image'], is_training=True,
                                                          data_format=data_format, reuse=reuse)
        losses = net.losses(logits, localisations, inputs['target_labels'], inputs['target_loc'],
                            negative_ratio=loss.negative_ratio, alpha=loss.loss_alpha,
                            label_smoothing=loss.label_smoothing, normalizer=inputs.get('loss_normalizer'))
        return losses, end_points
    return clone_fn


def create_clones(clone_fn, clone_inputs, device_fns):
    """Build one clone per input dict. clone_fn(inputs, reuse) -> (losses dict with 'total', outputs);
    clone 0 creates the variables (reuse=None), the others reuse them (reuse=True)."""
    clones = []
    for index, (inputs, device_fn) in enumerate(zip(clone_inputs, device_fns)):
        with tf.name_scope(f'clone_{index}') as scope, tf.device(device_fn):
            losses, outputs = clone_fn(inputs, True if index else None)
        clones.append(Clone(index, scope, device_fn, losses, outputs))
    return clones


def mean_clone_losses(clones):
    """Each loss component averaged over the clones: {name: (1/n) sum_i losses_i[name]}."""
    names = clones[0].losses.keys()
    with tf.name_scope('clone_mean_losses'):
        return {name: tf.add_n([clone.losses[name] for clone in clones]) / float(len(clones))
                for name in names}


def _sum_gradients(per_clone_grads_and_vars):
    """[(grad, var)] per clone -> [(sum of the clones' grads, var)], dropping variables with no gradient."""
    summed = []
    for pairs in zip(*per_clone_grads_and_vars):
        variable = pairs[0][1]
        grads = [tf.convert_to_tensor(grad) for grad, _ in pairs if grad is not None]
        if not grads:
            continue
        with tf.name_scope('sum_gradients'):
            summed.append((grads[0] if len(grads) == 1 else tf.add_n(grads), variable))
    return summed


def optimize_clones(clones, optimizer, regularization_losses, var_list=None):
    """(total_loss, grads_and_vars) for the formula in the module docstring."""
    count = float(len(clones))
    regularization = (tf.add_n(regularization_losses, name='regularization_loss')
                      if regularization_losses else None)
    per_clone = []
    for clone in clones:
        with tf.name_scope(clone.scope), tf.device(clone.device):
            loss = clone.losses['total'] / count
            if clone.index == 0 and regularization is not None:
                loss = loss + regularization
            per_clone.append(optimizer.compute_gradients(loss, var_list=var_list,
                                                         colocate_gradients_with_ops=True))
    grads_and_vars = _sum_gradients(per_clone)
    if not grads_and_vars:
        raise UserError('no trainable variable gets a gradient from the loss; check --trainable_scopes')
    with tf.name_scope('total_loss'):
        total = tf.add_n([clone.losses['total'] for clone in clones]) / count
        if regularization is not None:
            total = total + regularization
    return total, grads_and_vars


Deployment = collections.namedtuple('Deployment', [
    'master',          # session target: '' in one process, 'grpc://host:port' of this worker in a cluster
    'is_chief',        # initialises / restores, writes checkpoints and summaries
    'clone_devices',   # device name of each clone (for the report)
    'device_fns',      # tf.device argument of each clone: variables on the shared device, ops on the clone's
    'input_device',    # where the input pipeline runs
    'cpu_devices',     # logical CPU devices the session creates
    'device_filters',  # ConfigProto.device_filters (None in one process)
    'description',     # one line for the start-up report
])


def local_deployment(num_clones, use_gpus):
    """One process: clone i on GPU i (or logical CPU i), shared variables on variables_device()."""
    devices = compute_devices(num_clones, use_gpus)
    shared = variables_device(num_clones, use_gpus)
    return Deployment(master='', is_chief=True, clone_devices=devices,
                      device_fns=[variables_on(shared, device) for device in devices],
                      input_device='/device:CPU:0', cpu_devices=cpu_device_count(num_clones, use_gpus),
                      device_filters=None,
                      description=f'single process, variables on {shared}')
