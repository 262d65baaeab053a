"""Which images of a Pascal VOC folder go into which split: ImageSets/Main/<split>.txt lists, or, without
them, every Annotations/*.xml in one split plus an optional seeded validation 'test' split."""
import os
import random

from datasets.voc_reader import IMAGE_EXTENSIONS
from utils.errors import UserError

ANNOTATIONS_DIR = 'Annotations'
IMAGES_DIR = 'JPEGImages'
SPLITS_DIR = os.path.join('ImageSets', 'Main')
CVAT_LIST = 'default'   # CVAT's VOC export lists every image in ImageSets/Main/default.txt: no split


def annotation_files(annotations_dir):
    """Stem -> file name of annotations_dir/*.xml, the extension in any case ('img_007.XML'), sorted by stem."""
    return dict(sorted((name[:-4], name) for name in os.listdir(annotations_dir) if name.lower().endswith('.xml')))


def _listed_stem(entry):
    """A split list's entry as an annotation stem: 'img_020' as is, 'img_020.jpg' without its image extension."""
    stem, extension = os.path.splitext(entry)
    return stem if extension in IMAGE_EXTENSIONS else entry


def _split_lists(splits_dir):
    """split -> ids from ImageSets/Main/<split>.txt (first word per line, an image extension dropped); VOC's
    per-class '<class>_<split>.txt' lists are skipped, and CVAT's default.txt alone is no split list."""
    if not os.path.isdir(splits_dir):
        return {}
    stems = [name[:-4] for name in sorted(os.listdir(splits_dir)) if name.endswith('.txt')]
    lists = {}
    for stem in stems:
        if any(stem.endswith('_' + other) for other in stems if other != stem):
            continue
        with open(os.path.join(splits_dir, stem + '.txt'), encoding='utf-8', errors='replace') as source:
            lists[stem] = [_listed_stem(line.split()[0]) for line in source if line.split()]
    return {} if list(lists) == [CVAT_LIST] else lists


def split_list_names(dataset_dir):
    """The splits ImageSets/Main lists ('train', 'test', ...), sorted; [] without lists."""
    return sorted(_split_lists(os.path.join(dataset_dir, SPLITS_DIR)))


def _check_layout(dataset_dir):
    """UserError unless dataset_dir holds Annotations/ and JPEGImages/, naming what it holds instead."""
    if not os.path.isdir(dataset_dir):
        raise UserError(f'{dataset_dir}: no such directory')
    folders = sorted(name for name in os.listdir(dataset_dir) if os.path.isdir(os.path.join(dataset_dir, name)))
    layout = f'expected Pascal VOC layout: {ANNOTATIONS_DIR}/*.xml and {IMAGES_DIR}/*.jpg'
    if ANNOTATIONS_DIR not in folders:
        inside = [os.path.join(dataset_dir, name) for name in folders
                  if os.path.isdir(os.path.join(dataset_dir, name, ANNOTATIONS_DIR))]
        hint = f'; the VOC folders inside it: {", ".join(inside)}' if inside else ''
        raise UserError(f'{dataset_dir}: no {ANNOTATIONS_DIR}/ folder ({layout}){hint}')
    if IMAGES_DIR not in folders:
        raise UserError(f'{dataset_dir}: no {IMAGES_DIR}/ folder ({layout}); the folders there: '
                        f'{", ".join(name + "/" for name in folders)}')


def plan_splits(dataset_dir, split_name=None, validation_fraction=0.0, seed=0, use_lists=True):
    """split -> annotation stems. With ImageSets/Main lists (and use_lists): every list (or only split_name).
    Without: all Annotations/*.xml as split_name (default 'train'); validation_fraction > 0 moves
    round(fraction * n) of them, chosen by a random.Random(seed) sample, into 'test'."""
    _check_layout(dataset_dir)
    annotations_dir = os.path.join(dataset_dir, ANNOTATIONS_DIR)
    if not 0.0 <= validation_fraction < 1.0:
        raise UserError(f'--validation_fraction={validation_fraction}: must be in [0, 1)')
    lists = _split_lists(os.path.join(dataset_dir, SPLITS_DIR)) if use_lists else {}
    if lists:
        if validation_fraction > 0:
            raise UserError(f'{os.path.join(dataset_dir, SPLITS_DIR)}: split lists exist '
                            f'({", ".join(lists)}); --validation_fraction applies only without them')
        if split_name is None:
            return lists
        if split_name not in lists:
            raise UserError(f'{os.path.join(dataset_dir, SPLITS_DIR, split_name + ".txt")}: not found '
                            f'(lists there: {", ".join(lists)})')
        return {split_name: lists[split_name]}
    stems = list(annotation_files(annotations_dir))
    if not stems:
        raise UserError(f'{annotations_dir}: no .xml annotation files')
    split_name = split_name or 'train'
    if validation_fraction == 0:
        return {split_name: stems}
    if split_name == 'test':
        raise UserError("--split_name=test clashes with --validation_fraction, which writes 'test'")
    num_test = min(max(round(validation_fraction * len(stems)), 1), len(stems) - 1)
    test = set(random.Random(seed).sample(stems, num_test))
    return {split_name: [s for s in stems if s not in test], 'test': sorted(test)}
