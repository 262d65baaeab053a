"""Network selection by name, and the layout the layers run in (the one home of the data-format default)."""
import tensorflow.compat.v1 as tf

from nets import ssd_vgg_300, ssd_vgg_512
from nets.ssd_params import ANCHOR_SETS  # noqa: F401  (re-exported: the valid anchor sets, named once)
from utils.errors import UserError

MODEL_NAMES = ('ssd_300_vgg', 'ssd_512_vgg')
_NETWORKS = {'ssd_300_vgg': ssd_vgg_300.SSDNet, 'ssd_512_vgg': ssd_vgg_512.SSDNet}
DATA_FORMATS = ('NHWC', 'NCHW')


def _network_class(model_name):
    if model_name not in _NETWORKS:
        raise UserError('model_name %r is unknown: choose one of %s' % (model_name, ', '.join(MODEL_NAMES)))
    return _NETWORKS[model_name]


def get_network(model_name, num_classes, depth_multiplier=1.0, anchor_set='ssd_tensorflow', anchor_sizes=None):
    """An SSDNet for `model_name` (one of MODEL_NAMES); anchor_sizes (s_0..s_L, pixels), when given, replace
    anchor_set's sizes. UserError for an unknown name or bad value."""
    return _network_class(model_name)(num_classes=num_classes, depth_multiplier=depth_multiplier,
                                      anchor_set=anchor_set, anchor_sizes=anchor_sizes)


def num_anchor_sizes(model_name):
    """Values in a per-layer anchor size list of `model_name`: its feature layers + 1."""
    return _network_class(model_name).num_anchor_sizes()


def default_data_format(use_gpus=None):
    """'NCHW' when the network runs on GPUs (cuDNN's fast layout), else 'NHWC' (the CPU kernels' layout).
    use_gpus None: whether a GPU is visible."""
    if use_gpus is None:
        use_gpus = bool(tf.config.list_physical_devices('GPU'))
    return 'NCHW' if use_gpus else 'NHWC'


def resolve_data_format(requested, use_gpus, flag='--data_format'):
    """The layout to run: `requested` (None: default_data_format(use_gpus)); UserError for an unknown one,
    or NCHW where no GPU runs the network."""
    if requested not in (None,) + DATA_FORMATS:
        raise UserError(f'{flag}={requested}: use {" or ".join(DATA_FORMATS)}')
    data_format = requested or default_data_format(use_gpus)
    if data_format == 'NCHW' and not use_gpus:
        raise UserError(f'{flag}=NCHW: needs a GPU (CPU kernels run NHWC)')
    return data_format
