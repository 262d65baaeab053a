"""Flags shared by the inference tools (eval_ssd_network.py, detect.py, export_serving_model.py).

Defined once here so the three tools spell and document them alike; each script calls the define_*
functions at import and reads the values back through model_overrides, use_moving_averages and
postprocess_options.
"""
from absl import flags

from utils import inference_model


def define_model_flags(data_format_default=None, data_format_help='NHWC or NCHW (default: NCHW when a GPU '
                                                                   'is visible).'):
    """The checkpoint, overrides of the model_config.json saved beside it, and which of its weights to use."""
    flags.DEFINE_string('checkpoint_path', None, 'A checkpoint directory (newest checkpoint) or prefix.')
    flags.DEFINE_string('model_name', None, 'ssd_300_vgg or ssd_512_vgg.')
    flags.DEFINE_integer('num_classes', None, 'Classes including the background.')
    flags.DEFINE_float('depth_multiplier', None, 'Channel multiplier the network was trained with.')
    flags.DEFINE_string('anchor_set', None, 'ssd_tensorflow or caffe.')
    flags.DEFINE_string('data_format', data_format_default, data_format_help)
    flags.DEFINE_float('moving_average_decay', None, 'Set (any value) to use the moving averages of the '
                       'weights that training with --moving_average_decay kept, instead of the weights.')


def define_postprocess_flags(score_flag='select_threshold', score_default=0.01,
                             score_help='Minimum class score of a detection.'):
    """Detection post-processing: score threshold, per-class top-k and NMS, detections kept."""
    flags.DEFINE_float(score_flag, score_default, score_help)
    flags.DEFINE_float('nms_threshold', 0.45, 'Per-class non-maximum suppression IoU.')
    flags.DEFINE_integer('select_top_k', 400, 'Best anchors per class kept before NMS.')
    flags.DEFINE_integer('keep_top_k', 200, 'Detections kept per image after NMS.')


def model_overrides(flag_values):
    """{config key: flag value} for the model flags (None where not given)."""
    return {key: flag_values[key].value for key in inference_model.OVERRIDABLE_KEYS}


def use_moving_averages(flag_values):
    return flag_values.moving_average_decay is not None


def postprocess_options(flag_values, score_flag='select_threshold'):
    """Keyword arguments of the network's detect() from the post-processing flags."""
    return dict(score_threshold=flag_values[score_flag].value, nms_threshold=flag_values.nms_threshold,
                top_k=flag_values.select_top_k, keep_top_k=flag_values.keep_top_k)
