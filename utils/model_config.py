"""ModelConfig: the one description of a trained network, saved beside its checkpoints as
train_dir/model_config.json. Training writes it; evaluation, detection and export read it, so they rebuild
the trained network without repeating the training flags.

JSON keys: model_name, num_classes (background included), class_names (index 0 = 'none'), depth_multiplier,
anchor_set, image_size ([height, width], pixels), data_format ('NHWC' / 'NCHW', the layout training used),
labels_offset (subtracted from the record labels, see datasets/label_offset.py; 0 when absent, as in files
written before it was recorded), anchor_sizes (the per-layer anchor sizes s_0..s_L in pixels when they are not
anchor_set's, e.g. fitted by --anchor_sizes=auto; [] or absent: anchor_set's).
"""
import dataclasses
import os

from datasets.dataset_info import VOC_CLASSES, class_name, with_background
from nets import nets_factory
from nets.ssd_params import anchor_sizes_problem
from utils.checkpoints import in_scopes, read_variable_shapes
from utils.errors import UserError
from utils.file_io import read_json_object, write_json_atomically

CONFIG_FILENAME = 'model_config.json'
REQUIRED_KEYS = ('model_name', 'num_classes', 'class_names', 'depth_multiplier', 'anchor_set',
                 'image_size', 'data_format')
# Keys that change variable shapes or anchors: a checkpoint only fits a network that agrees on them.
# anchor_sizes keeps every shape, but a checkpoint's box heads were trained for its anchors.
ARCHITECTURE_KEYS = ('model_name', 'num_classes', 'depth_multiplier', 'anchor_set', 'anchor_sizes', 'image_size')
# Keys the inference tools' flags (--model_name, ...) may override.
OVERRIDABLE_KEYS = ('model_name', 'num_classes', 'depth_multiplier', 'anchor_set')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A network's configuration; the defaults are SSD-Tensorflow's published ssd_300_vgg.ckpt (VOC)."""
    model_name: str = 'ssd_300_vgg'
    num_classes: int = 21                 # background included
    class_names: tuple = ()               # num_classes names, index 0 = 'none' (background)
    depth_multiplier: float = 1.0
    anchor_set: str = 'ssd_tensorflow'
    image_size: tuple = (300, 300)        # (height, width) of the network input, pixels
    data_format: str = 'NHWC'             # layout the layers ran in during training
    labels_offset: int = 0                # model label = record label - labels_offset
    anchor_sizes: tuple = ()              # per-layer sizes s_0..s_L, pixels; (): anchor_set's
    names_from_file: bool = dataclasses.field(default=False, compare=False)  # class_names were saved ones

    def _need(self, condition, where, key, problem):
        if not condition:
            shown = ' ' if key == 'class_names' else f'={getattr(self, key)}: '
            raise UserError(f'{where}{key}{shown}{problem}')

    def validate_network(self, where='--'):
        """self; UserError naming the flag (where='--') or the file (where='<path>: ') for a bad network
        setting (model_name, anchor_set, depth_multiplier, labels_offset, image_size)."""
        def need(condition, key, problem):
            self._need(condition, where, key, problem)
        need(self.model_name in nets_factory.MODEL_NAMES, 'model_name',
             f'unknown; use one of {", ".join(nets_factory.MODEL_NAMES)}')
        need(self.anchor_set in nets_factory.ANCHOR_SETS, 'anchor_set',
             f'use {" or ".join(nets_factory.ANCHOR_SETS)}')
        need(self.depth_multiplier > 0, 'depth_multiplier', 'must be > 0')
        problem = self.anchor_sizes and anchor_sizes_problem(self.anchor_sizes,
                                                             nets_factory.num_anchor_sizes(self.model_name))
        need(not problem, 'anchor_sizes', f'{self.model_name} {problem}')
        need(self.labels_offset >= 0, 'labels_offset', 'must be >= 0')
        need(len(self.image_size) == 2 and self.image_size[0] == self.image_size[1], 'image_size',
             'must be [side, side]: SSD networks take square inputs')
        return self

    def validate(self, where='--'):
        """validate_network, then the classes and the layout."""
        def need(condition, key, problem):
            self._need(condition, where, key, problem)
        self.validate_network(where)
        need(self.data_format in nets_factory.DATA_FORMATS, 'data_format',
             f'use {" or ".join(nets_factory.DATA_FORMATS)}')
        need(self.num_classes >= 2, 'num_classes', 'must be >= 2 (background included)')
        need(len(self.class_names) == self.num_classes, 'class_names',
             'must list num_classes names (background first)')
        return self

    def build_network(self):
        """The nets_factory SSDNet of this configuration."""
        return nets_factory.get_network(self.model_name, self.num_classes, self.depth_multiplier, self.anchor_set,
                                        self.anchor_sizes or None)

    def settings(self):
        """'model_name=..., num_classes=..., depth_multiplier=..., anchor_set=...' for messages."""
        return ', '.join(f'{key}={getattr(self, key)}' for key in OVERRIDABLE_KEYS)

    def refit_advice(self, prefix):
        """What makes the checkpoint at `prefix`, which does not fit this network, load: the values its
        model_config.json gives where this configuration (the inference flags') differs, else the training
        settings to pass."""
        saved = ModelConfig.load(prefix)
        if saved is None:
            scopes = {name.split('/', 1)[0] for name in read_variable_shapes(prefix)}
            other_models = sorted(scopes.intersection(nets_factory.MODEL_NAMES) - {self.model_name})
            if len(other_models) == 1:
                return (f'its variables are under {other_models[0]}: pass --model_name={other_models[0]} with its other '
                        f'training settings (--num_classes, --depth_multiplier, --anchor_set), or keep '
                        f'{CONFIG_FILENAME} beside the checkpoint')
            return ('pass the training settings (--model_name, --num_classes, --depth_multiplier, --anchor_set) or '
                    f'keep {CONFIG_FILENAME} beside the checkpoint')
        differing = [key for key in OVERRIDABLE_KEYS if getattr(saved, key) != getattr(self, key)]
        if not differing:
            return f'it is not the checkpoint its {CONFIG_FILENAME} describes (copied from another run?)'
        return (f'its {CONFIG_FILENAME} says {", ".join(f"{key}={getattr(saved, key)}" for key in differing)}: leave '
                f'{" ".join("--" + key for key in differing)} out')

    def to_json(self):
        return {'model_name': self.model_name, 'num_classes': self.num_classes, 'class_names': list(self.class_names),
                'depth_multiplier': self.depth_multiplier, 'anchor_set': self.anchor_set,
                'image_size': [int(v) for v in self.image_size], 'data_format': self.data_format,
                'labels_offset': self.labels_offset, 'anchor_sizes': list(self.anchor_sizes)}

    @classmethod
    def from_json(cls, payload, path):
        """The config in a parsed model_config.json; UserError naming `path` for a missing key or bad value."""
        missing = [key for key in REQUIRED_KEYS if key not in payload]
        if missing:
            raise UserError(f'{path}: missing {", ".join(missing)}')
        if not isinstance(payload['class_names'], list):
            raise UserError(f'{path}: class_names must list num_classes names (background first)')
        anchor_sizes = payload.get('anchor_sizes', [])
        if not (isinstance(anchor_sizes, list) and all(isinstance(v, (int, float)) for v in anchor_sizes)):
            raise UserError(f'{path}: anchor_sizes must be a list of numbers (pixels)')
        values = {key: payload[key] for key in REQUIRED_KEYS}
        names = tuple(class_name(n) if isinstance(n, str) else n for n in payload['class_names'])   # older: NFD
        values.update(class_names=names, image_size=tuple(payload['image_size']),
                      labels_offset=payload.get('labels_offset', 0), anchor_sizes=tuple(map(float, anchor_sizes)),
                      names_from_file=True)
        return cls(**values).validate(where=f'{path}: ')

    def save(self, train_dir):
        """Write train_dir/model_config.json atomically (temp file in the same folder, then os.replace)."""
        os.makedirs(train_dir, exist_ok=True)
        write_json_atomically(os.path.join(train_dir, CONFIG_FILENAME), self.to_json())

    @classmethod
    def load(cls, path_or_dir):
        """The config saved in a directory or beside a checkpoint, or None when there is none."""
        path = config_path(path_or_dir)
        return cls.from_json(read_json_object(path), path) if os.path.isfile(path) else None

    def architecture_differences(self, other):
        """['key: self's -> other's', ...] for the architecture keys on which the two disagree."""
        def shown(config, key):
            value = getattr(config, key)
            if key == 'anchor_sizes' and not value:
                return f"{config.anchor_set}'s"
            return list(value) if isinstance(value, tuple) else value
        return [f'{key}: {shown(self, key)} -> {shown(other, key)}'
                for key in ARCHITECTURE_KEYS if getattr(self, key) != getattr(other, key)]


def config_path(path_or_dir):
    """model_config.json in a directory, or beside a checkpoint prefix / file."""
    if os.path.isdir(path_or_dir):
        return os.path.join(path_or_dir, CONFIG_FILENAME)
    if os.path.basename(path_or_dir) == CONFIG_FILENAME:
        return path_or_dir
    return os.path.join(os.path.dirname(path_or_dir) or '.', CONFIG_FILENAME)


def class_differences(dataset_names, model_names):
    """["label 1 is 'a' in the dataset, 'b' in the model", ...]: the labels (1..) whose names differ between two
    class lists of equal length, background first; [] when they agree."""
    return ['label %d is %r in the dataset, %r in the model' % (label, ours, theirs)
            for label, (ours, theirs) in enumerate(zip(dataset_names, model_names)) if label and ours != theirs]


def _same_count_other_classes(saved, config):
    """class_differences of config's classes (the dataset's) against saved's when the counts agree, else []."""
    return class_differences(config.class_names, saved.class_names) if saved.num_classes == config.num_classes else []


def _in_models_order(saved):
    return f'convert the records with a labels file listing {", ".join(saved.class_names[1:])} in that order'


def check_resumable(train_dir, config):
    """UserError when train_dir's saved config (if any) differs from `config` on an architecture key (its
    checkpoints could not be loaded into this network) or names other classes (they would load, each class's
    scores trained on another class's boxes)."""
    saved = ModelConfig.load(train_dir)
    differences = saved.architecture_differences(config) if saved else []
    if differences:
        raise UserError(f'--train_dir={train_dir}: its checkpoints are of another model ({"; ".join(differences)}); '
                        f'{_resume_hint(saved, config)}use a new --train_dir{_train_on_hint(train_dir, saved, config)} '
                        f'or delete them to start again')
    renamed = _same_count_other_classes(saved, config) if saved else []
    if renamed:
        raise UserError(f'--train_dir={train_dir}: its checkpoints learned other classes than this dataset\'s '
                        f'({"; ".join(renamed)}); {_in_models_order(saved)}, or use a new --train_dir (if only the '
                        f'names changed, not the objects, edit class_names in {config_path(train_dir)})')


def _resume_hint(saved, config):
    """'resume with --flag=value ... (...), or ' naming the flags that make config `saved` again; '' when none can
    (another class count is another dataset: no flag of the training makes it the saved one)."""
    if saved.num_classes != config.num_classes:
        return ''
    flags = _flags_to_rebuild(saved, config)
    return f'resume with {" ".join(flags)} (the flags it was trained with), or ' if flags else ''


def _train_on_hint(train_dir, saved, config):
    """' (... --checkpoint_path=train_dir ...)' when the classes changed (a class added, say): days of training
    need not be lost, as everything but the class heads loads into the new network (README section 6)."""
    if saved.num_classes == config.num_classes:
        return ''
    # The class heads of the network these flags build: the saved one's architecture with this run's classes.
    rebuilt = dataclasses.replace(config, anchor_sizes=saved.anchor_sizes,
                                  **{key: getattr(saved, key) for key in _NETWORK_FLAG_KEYS})
    flags = [f'--checkpoint_path={train_dir}',
             f'--checkpoint_exclude_scopes={",".join(rebuilt.build_network().class_head_scopes)}',
             *_flags_to_rebuild(saved, config)]
    return f' (to keep what they learned, train there from them with {" ".join(flags)})'


_NETWORK_FLAG_KEYS = ('model_name', 'depth_multiplier', 'anchor_set')   # training flags naming the network's layers


def _flags_to_rebuild(saved, config):
    """['--flag=value', ...]: the training flags on which config differs from the network `saved` describes."""
    flags = [f'--{key}={getattr(saved, key):g}' if key == 'depth_multiplier' else f'--{key}={getattr(saved, key)}'
             for key in _NETWORK_FLAG_KEYS if getattr(saved, key) != getattr(config, key)]
    if saved.anchor_sizes != config.anchor_sizes and saved.anchor_sizes:
        flags.append(f'--anchor_sizes={",".join(f"{v:g}" for v in saved.anchor_sizes)}')
    return flags


def pretrained_mismatch_warning(prefix, config, exclude_scopes=()):
    """A warning when the checkpoint to fine-tune from is one of this project's (model_config.json beside it)
    and its network differs from `config` on what a training flag sets: its weights would not fit (another
    width) or would fit but mean other boxes (other anchor sizes, e.g. a run with --anchor_sizes=auto); or when
    it has as many classes as the dataset but other ones, and exclude_scopes (--checkpoint_exclude_scopes) do not
    leave its class heads out. None otherwise, or without a model_config.json (a published checkpoint)."""
    saved = ModelConfig.load(prefix) if prefix else None
    if not saved:
        return None
    flags = _flags_to_rebuild(saved, config)
    if flags:
        return (f'warning: {prefix} was trained with {" ".join(flags)} (its {CONFIG_FILENAME}), which this run\'s '
                f'flags do not give: add them to train on from it')
    heads = config.build_network().class_head_scopes
    renamed = _same_count_other_classes(saved, config)
    if not renamed or all(in_scopes(head, exclude_scopes) for head in heads):
        return None
    return (f'warning: {prefix} learned other classes ({"; ".join(renamed)}; its {CONFIG_FILENAME}): each class '
            f'would start from another\'s scores. To train on its classes, {_in_models_order(saved)}; to learn new '
            f'ones, leave its class heads out with --checkpoint_exclude_scopes={",".join(heads)}')


def inference_config(checkpoint_prefix, overrides, data_format='NHWC'):
    """The ModelConfig to rebuild a checkpoint's network for inference.

    model_name, num_classes, depth_multiplier, anchor_set: `overrides` entries that are not None, then the
    saved config, then the defaults (the published VOC SSD300). class_names: the saved ones when their count
    fits (names_from_file True), VOC's for 21 classes, else 'class <i>'. image_size and anchor_sizes: the saved
    ones for the same model name and anchor set, else the network's defaults. labels_offset: the saved one.
    data_format: the layout to run.
    """
    saved = ModelConfig.load(checkpoint_prefix)
    base = saved or ModelConfig()
    chosen = {key: getattr(base, key) for key in OVERRIDABLE_KEYS}
    chosen.update({key: value for key, value in overrides.items() if value is not None})
    num_classes = int(chosen['num_classes'])
    if saved and len(saved.class_names) == num_classes:
        names, from_file = saved.class_names, True
    elif num_classes == len(VOC_CLASSES) + 1:
        names, from_file = with_background(VOC_CLASSES), False
    else:
        names, from_file = with_background(['class %d' % i for i in range(1, num_classes)]), False
    config = ModelConfig(**dict(chosen, num_classes=num_classes), class_names=tuple(names), data_format=data_format,
                         labels_offset=saved.labels_offset if saved else 0, names_from_file=from_file).validate()
    if saved and saved.model_name == config.model_name:
        same_anchors = saved.anchor_set == config.anchor_set
        return dataclasses.replace(config, image_size=saved.image_size,
                                   anchor_sizes=saved.anchor_sizes if same_anchors else ())
    return dataclasses.replace(config, image_size=(config.build_network().default_image_size,) * 2)
