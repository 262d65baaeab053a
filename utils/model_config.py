"""The model's configuration saved beside its checkpoints (train_dir/model_config.json).

Evaluation, detection and export read it, so they rebuild the trained network without repeating the
training flags. Keys: model_name, num_classes (background included), class_names (index 0 = 'none'),
depth_multiplier, anchor_set, image_size ([height, width], pixels), data_format ('NHWC' / 'NCHW', the
layout training used); optional labels_offset (subtracted from the record labels, see
datasets/label_offset.py; 0 when absent, as in files written before it was recorded).
"""
import os

from utils.file_io import read_json_object, write_json_atomically
from utils.errors import UserError

CONFIG_FILENAME = 'model_config.json'
REQUIRED_KEYS = ('model_name', 'num_classes', 'class_names', 'depth_multiplier', 'anchor_set',
                 'image_size', 'data_format')
OPTIONAL_KEYS = {'labels_offset': 0}   # key: value assumed when a file lacks it
# Keys that change variable shapes or anchors: a checkpoint only fits a network that agrees on them.
ARCHITECTURE_KEYS = ('model_name', 'num_classes', 'depth_multiplier', 'anchor_set', 'image_size')


def config_path(path_or_dir):
    """model_config.json in a directory, or beside a checkpoint prefix / file."""
    if os.path.isdir(path_or_dir):
        return os.path.join(path_or_dir, CONFIG_FILENAME)
    if os.path.basename(path_or_dir) == CONFIG_FILENAME:
        return path_or_dir
    return os.path.join(os.path.dirname(path_or_dir) or '.', CONFIG_FILENAME)


def save_model_config(train_dir, config):
    """Write train_dir/model_config.json atomically (temp file in the same folder, then os.replace)."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f'model config lacks {", ".join(missing)}')
    os.makedirs(train_dir, exist_ok=True)
    payload = {key: config[key] for key in REQUIRED_KEYS}
    payload.update({key: config.get(key, default) for key, default in OPTIONAL_KEYS.items()})
    payload['image_size'] = [int(v) for v in payload['image_size']]
    write_json_atomically(os.path.join(train_dir, CONFIG_FILENAME), payload)


def load_model_config(path_or_dir):
    """The saved config dict, or None when there is none; UserError when the file is unreadable."""
    path = config_path(path_or_dir)
    if not os.path.isfile(path):
        return None
    config = read_json_object(path)
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise UserError(f'{path}: missing {", ".join(missing)}')
    names = config['class_names']
    if not isinstance(names, list) or len(names) != config['num_classes']:
        raise UserError(f'{path}: class_names must list num_classes names (background first)')
    return dict(OPTIONAL_KEYS, **config)


def check_resumable(train_dir, config):
    """UserError when train_dir's saved config (if any) differs from `config` on an architecture key:
    its checkpoints could not be loaded into this network."""
    saved = load_model_config(train_dir)
    differences = architecture_differences(saved, config) if saved else []
    if differences:
        raise UserError(f'--train_dir={train_dir}: its checkpoints are of another model ({"; ".join(differences)}); '
                        f'use a new --train_dir or delete them to start again')


def architecture_differences(saved, current):
    """['key: saved -> current', ...] for the architecture keys on which two configs disagree."""
    differences = []
    for key in ARCHITECTURE_KEYS:
        old, new = saved.get(key), current.get(key)
        if key == 'image_size':
            old, new = list(old or []), list(new or [])
        if old != new:
            differences.append(f'{key}: {old} -> {new}')
    return differences
