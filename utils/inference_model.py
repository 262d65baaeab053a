"""A trained detector rebuilt for inference: checkpoint, model configuration, network, detections, restore.

Shared by eval_ssd_network.py, detect.py and deployment/export_serving_model.py. The configuration comes
from train_dir/model_config.json beside the checkpoint (utils.model_config); explicit overrides win, and
a checkpoint without one (e.g. SSD-Tensorflow's published ssd_300_vgg.ckpt) gets the VOC SSD300 defaults.
"""
import re

import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets.dataset_info import VOC_CLASSES, with_background
from nets import nets_factory
from preprocessing.preprocessing_factory import get_preprocessing
from utils import restore
from utils.errors import UserError
from utils.model_config import load_model_config

# The published SSD-Tensorflow checkpoint's configuration: used for keys neither saved nor overridden.
MODEL_DEFAULTS = {'model_name': 'ssd_300_vgg', 'num_classes': 21, 'depth_multiplier': 1.0,
                  'anchor_set': 'ssd_tensorflow'}
OVERRIDABLE_KEYS = tuple(MODEL_DEFAULTS)


def resolve_checkpoint(checkpoint_path, flag='--checkpoint_path'):
    """Checkpoint prefix from a directory (its newest checkpoint), a prefix or one of its files."""
    prefix = restore.resolve_pretrained(checkpoint_path, flag=flag)
    if prefix is None:
        raise UserError(f'{flag}={checkpoint_path}: no checkpoint in this directory')
    return prefix


def checkpoint_global_step(prefix):
    """The checkpoint's global_step variable, else the '-<step>' suffix of its name, else None."""
    try:
        return int(tf.train.load_variable(prefix, 'global_step'))
    except (tf.errors.OpError, ValueError):
        found = re.search(r'-(\d+)$', prefix)
        return int(found.group(1)) if found else None


def inference_config(checkpoint_prefix, overrides):
    """Model configuration dict for a checkpoint.

    Keys: model_name, num_classes, depth_multiplier, anchor_set (saved config, then `overrides` entries
    that are not None, then MODEL_DEFAULTS); class_names (list, index 0 = background: the saved names
    when their count fits, VOC's for 21 classes, else 'class <i>') and class_names_saved (True for the
    saved ones); labels_offset (the saved one, else 0: model label = record label - labels_offset);
    image_size [height, width] (the saved one for the same model name, else the network's default).
    """
    saved = load_model_config(checkpoint_prefix) or {}
    config = dict(MODEL_DEFAULTS)
    config.update({key: saved[key] for key in OVERRIDABLE_KEYS if key in saved})
    config.update({key: value for key, value in overrides.items() if value is not None})
    num_classes = int(config['num_classes'])
    config['class_names_saved'] = len(saved.get('class_names') or []) == num_classes
    if config['class_names_saved']:
        config['class_names'] = list(saved['class_names'])
    elif num_classes == len(VOC_CLASSES) + 1:
        config['class_names'] = with_background(VOC_CLASSES)
    else:
        config['class_names'] = with_background(['class %d' % i for i in range(1, num_classes)])
    config['labels_offset'] = int(saved.get('labels_offset', 0))
    network = nets_factory.get_network(config['model_name'], num_classes, config['depth_multiplier'],
                                       config['anchor_set'])
    if saved.get('image_size') and saved.get('model_name') == config['model_name']:
        config['image_size'] = [int(size) for size in saved['image_size']]
    else:
        config['image_size'] = [network.default_image_size] * 2
    return config


def build_detections(images, config, data_format, detect_options, reuse=None):
    """Network forward pass and post-processing on preprocessed images.

    images: float32 [B, h, w, 3] NHWC, mean-subtracted, h x w = config['image_size'].
    data_format: 'NHWC' / 'NCHW' layout of the layers (weights are the same in both).
    detect_options: keyword arguments of net.detect (score_threshold, nms_threshold, top_k, keep_top_k).
    Returns (network, net.detect's dict: detection_boxes [B, K, 4] normalised yxyx, detection_scores,
    detection_classes, num_detections).
    """
    network = nets_factory.get_network(config['model_name'], config['num_classes'], config['depth_multiplier'],
                                       config['anchor_set'])
    with slim.arg_scope(network.arg_scope(data_format=data_format)):
        logits, localisations, _ = network.build(images, is_training=False, data_format=data_format, reuse=reuse)
    return network, network.detect(logits, localisations, **detect_options)


def detect_images(images, config, data_format, detect_options, decode=False, reuse=None):
    """build_detections on raw images: each is decoded (decode=True), resized to config['image_size'] and
    mean-subtracted by the model's eval preprocessing.

    images: string [B] of encoded JPEG / PNG files (decode=True; undecodable bytes fail the run with
    InvalidArgument from the op 'decode_image_bytes'), or uint8 [B, H, W, 3] of any size. Boxes are
    normalised, so they hold for the original images. Returns build_detections' (network, detections).
    """
    preprocess = get_preprocessing(config['model_name'], is_training=False)
    out_shape = tuple(config['image_size'])
    no_labels = tf.zeros([0], tf.int64)

    def one_image(image):
        if decode:
            image = tf.io.decode_image(image, channels=3, expand_animations=False, name='decode_image_bytes')
            image.set_shape([None, None, 3])
        return preprocess(image, no_labels, tf.zeros([0, 4]), no_labels, out_shape=out_shape)[0]
    batch = tf.map_fn(one_image, images, dtype=tf.float32, back_prop=False)
    batch.set_shape([None, out_shape[0], out_shape[1], 3])
    return build_detections(batch, config, data_format, detect_options, reuse=reuse)


def model_variables(network):
    """The network's global variables (weights, biases, L2-normalisation scales), by their own names."""
    return {variable.op.name: variable for variable in tf.global_variables(scope=network.scope + '/')}


def variables_to_restore(prefix, network, use_moving_averages=False):
    """{name in the checkpoint: variable} for the network.

    With use_moving_averages, a variable reads its ExponentialMovingAverage shadow ('<name>/
    ExponentialMovingAverage', written by training with --moving_average_decay) where the checkpoint has
    one, else its own value; UserError when the checkpoint holds no averages at all.
    """
    variables = model_variables(network)
    if not use_moving_averages:
        return variables
    try:
        stored = {name for name, _ in tf.train.list_variables(prefix)}
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f'{prefix}: cannot read checkpoint ({str(err).splitlines()[0]})') from None
    names = tf.train.ExponentialMovingAverage(decay=0.0)   # only its naming rule is used
    mapping = {}
    for name, variable in variables.items():
        shadow = names.average_name(variable)
        mapping[shadow if shadow in stored else name] = variable
    if len(set(mapping) - set(variables)) == 0:
        raise UserError(f'{prefix}: holds no moving averages of the weights (train with --moving_average_decay, '
                        f'or evaluate without it)')
    return mapping


def check_checkpoint_fits(prefix, variables_map, config):
    """UserError naming the mismatched variables (and the configuration in use) when the checkpoint at
    `prefix` lacks one of `variables_map` ({name in the checkpoint: variable}) or stores another shape."""
    mismatches = nets_factory.check_checkpoint_compatibility(prefix, variables_map)
    if not mismatches:
        return
    settings = ', '.join('%s=%s' % (key, config[key]) for key in OVERRIDABLE_KEYS)
    raise UserError(f'{prefix}: does not fit the network built with {settings}: '
                    f'{restore.format_mismatches(mismatches)}; pass the training settings (--model_name, '
                    f'--num_classes, --depth_multiplier, --anchor_set) or keep model_config.json beside the '
                    f'checkpoint')


def restore_checkpoint(session, saver, prefix, variables_map, config):
    """Checks that the checkpoint fits (check_checkpoint_fits), then restores with `saver` (a
    tf.train.Saver over `variables_map`); read errors become UserError."""
    check_checkpoint_fits(prefix, variables_map, config)
    try:
        saver.restore(session, prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f'{prefix}: cannot restore ({str(err).splitlines()[0]})') from None
