"""What a converted dataset holds: dataset_info.json, built-in class lists, label files, shard lists.

`dataset_info.json` sits beside the TFRecord shards; training and evaluation read num_classes and
num_samples from it, so a custom dataset needs no code edit. Class names are stored in label order:
index 0 is the background 'none', labels 1..K are the object classes (num_classes = K + 1).
"""
import dataclasses
import os
import re
import unicodedata

from utils.file_io import read_json_object, write_json_atomically
from utils.errors import UserError

INFO_FILENAME = 'dataset_info.json'
BACKGROUND_NAME = 'none'

# Pascal VOC's 20 classes in SSD-Tensorflow's label order (label = position + 1).
VOC_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
    'tvmonitor')
BUILTIN_CLASS_LISTS = {'pascalvoc_2007': VOC_CLASSES, 'pascalvoc_2012': VOC_CLASSES}
# Split sizes SSD-Tensorflow hard-coded for its records, used only for legacy directories
# that have no dataset_info.json.
BUILTIN_SPLIT_SIZES = {'pascalvoc_2007': {'train': 5011, 'test': 4952},
                       'pascalvoc_2012': {'train': 17125}}
# SSD-Tensorflow's converter called its VOC dataset 'pascalvoc'.
_BUILTIN_ALIASES = {'pascalvoc': 'pascalvoc_2007', 'voc': 'pascalvoc_2007'}
# How a missing split is made: evaluation reads 'test', which a folder without split lists only gets on request.
_MAKING_SPLITS = ("tf_convert_data.py writes the splits ImageSets/Main/*.txt name, or without those lists "
                  "'train' and, with --validation_fraction=0.2, a 'test' split of a fifth of the images")


@dataclasses.dataclass
class DatasetInfo:
    """A converted dataset: class_names[0] == 'none'; num_samples: split -> records;
    boxes_per_class: class name -> boxes over all splits."""
    name: str
    class_names: list
    num_samples: dict
    boxes_per_class: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self):
        """Number of classes including the background (K + 1)."""
        return len(self.class_names)


def builtin_class_names(name):
    """The 20 object class names (no background) of a built-in list, or None for an unknown name."""
    name = _BUILTIN_ALIASES.get(name, name)
    names = BUILTIN_CLASS_LISTS.get(name)
    return list(names) if names is not None else None


def with_background(object_class_names):
    """['none'] + the object class names: the label-ordered list DatasetInfo stores."""
    return [BACKGROUND_NAME] + list(object_class_names)


def write_dataset_info(output_dir, info):
    """Write output_dir/dataset_info.json atomically (temp file in the same folder, then os.replace)."""
    os.makedirs(output_dir, exist_ok=True)
    payload = {'name': info.name, 'num_classes': info.num_classes,
               'class_names': list(info.class_names),
               'num_samples': dict(info.num_samples),
               'boxes_per_class': dict(info.boxes_per_class)}
    write_json_atomically(os.path.join(output_dir, INFO_FILENAME), payload)


def _is_count_dict(value):
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items())


def load_dataset_info(dataset_dir):
    """Read dataset_info.json from dataset_dir (or the json path itself); UserError if missing/invalid."""
    path = dataset_dir if dataset_dir.endswith('.json') else os.path.join(dataset_dir, INFO_FILENAME)
    if not os.path.isfile(path):
        raise UserError(f'{path}: not found; convert the images first with tf_convert_data.py')
    payload = read_json_object(path)
    names = payload.get('class_names')
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        names = [class_name(n) for n in names]   # records of an older converter may hold decomposed forms
    if (not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names)
            or names[0] != BACKGROUND_NAME or len(set(names)) != len(names)):
        raise UserError(f'{path}: class_names must be a list of distinct names starting with '
                        f'{BACKGROUND_NAME!r} and at least one class')
    if not _is_count_dict(payload.get('num_samples')):
        raise UserError(f'{path}: num_samples must map split names to sample counts')
    boxes = payload.get('boxes_per_class', {})
    if not _is_count_dict(boxes):
        raise UserError(f'{path}: boxes_per_class must map class names to box counts')
    name = payload.get('name')
    if not isinstance(name, str) or not name:
        raise UserError(f'{path}: name must be a non-empty string')
    return DatasetInfo(name=name, class_names=names, num_samples=payload['num_samples'],
                       boxes_per_class=boxes)


def resolve_dataset_info(dataset_dir, dataset_name=None):
    """dataset_info.json when present; else, for a legacy SSD-Tensorflow record directory, the
    built-in class list and split sizes of dataset_name ('pascalvoc_2007' / 'pascalvoc_2012'). With the json, a
    dataset_name must be the dataset's name or a built-in list equal to its classes (UserError): it names a
    class list, which the json's would silently override."""
    if os.path.isfile(os.path.join(dataset_dir, INFO_FILENAME)):
        info = load_dataset_info(dataset_dir)
        builtin = builtin_class_names(dataset_name)
        if (dataset_name and dataset_name != info.name
                and not (builtin and info.class_names == with_background(builtin))):
            raise UserError(f'--dataset_name={dataset_name}: {dataset_dir} holds the dataset {info.name!r} '
                            f'({info.num_classes - 1} classes); the flag only names a built-in class list for a '
                            f'folder without {INFO_FILENAME}')
        return info
    if not os.path.isdir(dataset_dir):
        raise UserError(f'{dataset_dir}: dataset directory not found')
    canonical = _BUILTIN_ALIASES.get(dataset_name, dataset_name)
    if canonical in BUILTIN_CLASS_LISTS:
        return DatasetInfo(name=canonical, class_names=with_background(BUILTIN_CLASS_LISTS[canonical]),
                           num_samples=dict(BUILTIN_SPLIT_SIZES[canonical]))
    builtin = ' or '.join(sorted(BUILTIN_CLASS_LISTS))
    unknown = f'; dataset name {dataset_name!r} is not built in ({builtin})' if dataset_name else ''
    raise UserError(
        f'{os.path.join(dataset_dir, INFO_FILENAME)}: not found{unknown}; convert the images with '
        f'tf_convert_data.py (records of SSD-Tensorflow\'s VOC converter: pass --dataset_name={builtin})')


def list_shards(dataset_dir, split_name, dataset_name=None):
    """Sorted shard paths '<dataset_name>_<split>_<digits>.tfrecord' in dataset_dir.

    Without dataset_name, the name in dataset_info.json is used when there is one, else any name
    (so SSD-Tensorflow's 'voc_2007_train_000.tfrecord' is found for split 'train'). A split that the
    dataset's dataset_info.json does not list is refused: shards of it are left over from an older
    conversion."""
    info_path = os.path.join(dataset_dir, INFO_FILENAME)
    if os.path.isfile(info_path):
        info = load_dataset_info(dataset_dir)
        if dataset_name in (None, info.name):
            dataset_name = info.name
            if split_name not in info.num_samples:
                raise UserError(f'{dataset_dir}: split {split_name!r} is not in {INFO_FILENAME}, which lists '
                                f'{", ".join(info.num_samples) or "no split"}; {_MAKING_SPLITS}')
    prefix = re.escape(dataset_name) if dataset_name else '.+'
    shard_name = re.compile(rf'{prefix}_{re.escape(split_name)}_\d+\.tfrecord')
    names = os.listdir(dataset_dir) if os.path.isdir(dataset_dir) else []
    paths = sorted(os.path.join(dataset_dir, n) for n in names
                   if shard_name.fullmatch(n) and os.path.isfile(os.path.join(dataset_dir, n)))
    if not paths:
        if not os.path.isdir(dataset_dir):
            raise UserError(f'{dataset_dir}: dataset directory not found')
        expected = f'{dataset_name or "<name>"}_{split_name}_<NNN>.tfrecord'
        raise UserError(f'{dataset_dir}: no TFRecord shards for split {split_name!r} (expected {expected})')
    return paths


def class_name(text):
    """A class name as datasets keep it: without leading and trailing white space, in Unicode's composed form
    (NFC), so a 'café' written as 'e' and a combining accent (macOS file names, some tools) is the 'café' of
    the other files, not a second class that looks the same."""
    return unicodedata.normalize('NFC', text.strip())


def read_labels_file(path):
    """Object class names (no background), one per line, in label order (first line = label 1).

    Blank lines and lines starting with '#' are skipped ('chips #2' is a name); TF-Slim's 'index:name' lines
    are accepted, and a leading 'none'/'background' entry is dropped since label 0 is always the background.
    A UTF-8 byte order mark (Windows Notepad writes one) is not part of the first name."""
    try:
        with open(path, encoding='utf-8-sig') as source:
            lines = source.read().splitlines()
    except UnicodeDecodeError as err:   # Windows Notepad's 'ANSI' (cp1252, GBK) writes 'é' as one byte
        raise UserError(f'{path}: the labels file is not UTF-8 (byte {err.object[err.start]:#04x} at offset '
                         f'{err.start}); save it with the encoding UTF-8') from None
    except OSError as err:
        raise UserError(f'{path}: cannot read labels file ({err})') from None
    names = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        index, sep, rest = line.partition(':')
        names.append(class_name(rest if sep and index.strip().isdigit() else line))
    if names and names[0].lower() in (BACKGROUND_NAME, 'background'):
        names = names[1:]
    if not names:
        raise UserError(f'{path}: labels file lists no class names')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f'{path}: class names listed twice: {", ".join(duplicates)}')
    return names
