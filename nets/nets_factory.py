"""Network selection by name, default data format, and checkpoint name / shape helpers."""
import collections

import tensorflow.compat.v1 as tf

from nets import ssd_vgg_300, ssd_vgg_512
from utils.errors import UserError

MODEL_NAMES = ('ssd_300_vgg', 'ssd_512_vgg')
_NETWORKS = {'ssd_300_vgg': ssd_vgg_300.SSDNet, 'ssd_512_vgg': ssd_vgg_512.SSDNet}

# One variable whose shape differs between the model and a checkpoint; checkpoint_shape None = absent.
CheckpointMismatch = collections.namedtuple('CheckpointMismatch',
                                            ['checkpoint_name', 'model_shape', 'checkpoint_shape'])


def get_network(model_name, num_classes, depth_multiplier=1.0, anchor_set='ssd_tensorflow'):
    """An SSDNet for `model_name` (one of MODEL_NAMES); UserError for an unknown name or bad value."""
    if model_name not in _NETWORKS:
        raise UserError('model_name %r is unknown: choose one of %s' % (model_name, ', '.join(MODEL_NAMES)))
    return _NETWORKS[model_name](num_classes=num_classes, depth_multiplier=depth_multiplier,
                                 anchor_set=anchor_set)


def default_data_format():
    """'NCHW' when a GPU is visible (cuDNN's fast layout), else 'NHWC' (the CPU kernels' layout)."""
    return 'NCHW' if tf.config.list_physical_devices('GPU') else 'NHWC'


def checkpoint_variable_map(variables, model_scope, checkpoint_model_scope=None):
    """{checkpoint name: variable}, renaming a leading `model_scope` to `checkpoint_model_scope`.

    E.g. model_scope 'ssd_300_vgg', checkpoint_model_scope 'vgg_16':
    ssd_300_vgg/conv1/conv1_1/weights <- vgg_16/conv1/conv1_1/weights. None keeps the names.
    """
    mapping = {}
    for variable in variables:
        name = variable.op.name
        if checkpoint_model_scope is not None and (name == model_scope or name.startswith(model_scope + '/')):
            name = checkpoint_model_scope + name[len(model_scope):]
        mapping[name] = variable
    return mapping


def check_checkpoint_compatibility(checkpoint_path, variables_map):
    """Mismatches between `variables_map` ({checkpoint name: variable}) and the checkpoint's contents.

    Returns a list of CheckpointMismatch, sorted by name: variables absent from the checkpoint or with
    another shape (e.g. the box heads of a checkpoint trained with another num_classes). Empty = restorable.
    """
    try:
        checkpoint_shapes = dict(tf.train.list_variables(checkpoint_path))
    except (tf.errors.OpError, ValueError) as error:
        raise UserError('%s: cannot read checkpoint (%s)' % (checkpoint_path, str(error).splitlines()[0]))
    mismatches = []
    for name in sorted(variables_map):
        model_shape = variables_map[name].shape.as_list()
        checkpoint_shape = checkpoint_shapes.get(name)
        if checkpoint_shape is None or list(checkpoint_shape) != model_shape:
            mismatches.append(CheckpointMismatch(name, model_shape, checkpoint_shape))
    return mismatches
