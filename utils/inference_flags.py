"""Flags shared by the inference tools (eval_ssd_network.py, detect.py, deployment/export_serving_model.py,
deployment/export_tflite.py).

Defined once here so the four tools spell and document them alike; each script calls the define_*
functions at import and turns the values into a ModelConfig, restore settings and post-processing options
with the functions below.
"""
import os

from absl import flags

from nets import nets_factory
from utils import checkpoints, devices
from utils.errors import UserError
from utils.model_config import OVERRIDABLE_KEYS, inference_config


def define_model_flags(data_format_default=None, data_format_help='NHWC or NCHW (default: NCHW when a GPU '
                                                                   'is visible).'):
    """The checkpoint, overrides of the model_config.json saved beside it, and which of its weights to use."""
    flags.DEFINE_string('checkpoint_path', None, 'A checkpoint directory (newest checkpoint) or prefix.')
    flags.DEFINE_string('model_name', None, ' or '.join(nets_factory.MODEL_NAMES) + '.')
    flags.DEFINE_integer('num_classes', None, 'Classes including the background.')
    flags.DEFINE_float('depth_multiplier', None, 'Channel multiplier the network was trained with.')
    flags.DEFINE_string('anchor_set', None, ' or '.join(nets_factory.ANCHOR_SETS) + '.')
    flags.DEFINE_string('data_format', data_format_default, data_format_help)
    flags.DEFINE_float('moving_average_decay', None, 'Set (to the training value, any value in (0, 1)) to use the '
                       'moving averages of the weights that training with --moving_average_decay kept instead of '
                       'the weights; 0 or unset: the weights.')


def define_tflite_flag(use):
    """--model, the TFLite alternative to --checkpoint_path; `use`: what the tool does with it."""
    flags.DEFINE_string('model', None, f'A .tflite model (deployment/export_tflite.py) to {use} instead of '
                        f'--checkpoint_path; its post-processing is the one set at its export.')


def check_model_source(flag_values):
    """UserError unless exactly one of --checkpoint_path and --model is given, or for a --model file that is not
    there (said before anything loads: a typo shows at once)."""
    if bool(flag_values.checkpoint_path) == bool(flag_values.model):
        raise UserError('give one of --checkpoint_path (a checkpoint) and --model (a .tflite model)')
    if flag_values.model and not os.path.isfile(flag_values.model):
        raise UserError(f'--model={flag_values.model}: no such file')


# Flags a TFLite model cannot take: its network and post-processing were fixed at export (detect.py's
# --score_threshold only filters what the model returns).
_TFLITE_FIXED_FLAGS = ('model_name', 'num_classes', 'depth_multiplier', 'anchor_set', 'data_format',
                       'moving_average_decay', 'select_threshold', 'nms_threshold', 'select_top_k', 'keep_top_k')


def check_tflite_flags(flag_values):
    """UserError for --model with one of the tool's flags that would change the network or the
    post-processing: the model would run as exported, the flag silently ignored."""
    given = [name for name in _TFLITE_FIXED_FLAGS if name in flag_values and flag_values[name].present]
    if given:
        raise UserError(f'--{given[0]}: a TFLite model keeps the network and post-processing it was exported with '
                        f'(export_tflite.py takes the post-processing flags)')


def define_postprocess_flags(score_flag='select_threshold', score_default=0.01,
                             score_help='Minimum class score of a detection.'):
    """Detection post-processing: score threshold, per-class top-k and NMS, detections kept."""
    flags.DEFINE_float(score_flag, score_default, score_help + ' In [0, 1].')
    flags.DEFINE_float('nms_threshold', 0.45, 'Per-class non-maximum suppression IoU, in [0, 1].')
    flags.DEFINE_integer('select_top_k', 400, 'Best anchors per class kept before NMS (>= 1).')
    flags.DEFINE_integer('keep_top_k', 200, 'Detections kept per image after NMS (>= 1).')


def run_data_format(flag_values):
    """--data_format for running the network here (eval, detect): the default layout of this machine's device;
    NCHW without a GPU is refused (nets_factory.resolve_data_format)."""
    return nets_factory.resolve_data_format(flag_values.data_format, devices.visible_gpu_count() > 0)


def model_config(flag_values, prefix, data_format):
    """The ModelConfig of the checkpoint at `prefix` with the model flags' overrides, run in `data_format`."""
    overrides = {key: flag_values[key].value for key in OVERRIDABLE_KEYS}
    return inference_config(prefix, overrides, data_format)


def use_moving_averages(flag_values):
    """True for --moving_average_decay in (0, 1) (TF-Slim's rule: 0 or unset means the raw weights)."""
    decay = flag_values.moving_average_decay
    if decay is not None and not 0 <= decay < 1:
        raise UserError(f'--moving_average_decay={decay}: must be in (0, 1) to use the moving averages, '
                        f'or 0 for the weights')
    return bool(decay)


def postprocess_options(flag_values, score_flag='select_threshold'):
    """Keyword arguments of the network's detect() from the post-processing flags; UserError naming the flag for
    a value it cannot use (TensorFlow would fail deep in the NMS, or silently keep nothing). Every tool calls it
    before its model loads."""
    for name in (score_flag, 'nms_threshold'):
        if not 0 <= flag_values[name].value <= 1:
            raise UserError(f'--{name}={flag_values[name].value:g}: must be in [0, 1]')
    for name in ('select_top_k', 'keep_top_k'):
        if flag_values[name].value < 1:
            raise UserError(f'--{name}={flag_values[name].value}: must be >= 1')
    return dict(score_threshold=flag_values[score_flag].value, nms_threshold=flag_values.nms_threshold,
                top_k=flag_values.select_top_k, keep_top_k=flag_values.keep_top_k)


def weights_to_restore(flag_values, prefix, network):
    """{name in the checkpoint: variable}: the network's weights, or their moving averages per
    --moving_average_decay (checkpoints.inference_variable_map)."""
    return checkpoints.inference_variable_map(prefix, network, use_moving_averages(flag_values))
