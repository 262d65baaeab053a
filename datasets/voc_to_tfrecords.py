"""Pascal VOC folder (Annotations/*.xml, JPEGImages/*, optional ImageSets/Main/<split>.txt) -> TFRecords.

Records carry SSD-Tensorflow's feature keys (datasets/tfrecord_schema.py), so its records and ours
load alike. Box coordinates are VOC pixel values divided by the real image size, exactly as
SSD-Tensorflow did: y / height, x / width with no 1-based offset (VOC's xmin = 1 is the first pixel,
so left/top edges sit at most 1 px right/below the true edge, immaterial at IoU 0.5). Reading each
sample (XML, image bytes and their RGB conversion, box clipping) is datasets/voc_reader.py's part;
image/format says which encoding is stored ('JPEG' or 'PNG').

Bad input never stops the run: each sample left out, repaired or converted is an Issue, listed in the
summary (20 per kind) and in full in conversion_report.txt beside the shards. Shards are written to
'<name>.partial' and renamed when complete. A conversion of every split replaces the dataset; one of a
single split (SSD-Tensorflow's way: train, then test, into one folder) merges into the dataset_info.json
there. While writing, dataset_info.json lists only complete splits (the kept ones, or none), and the
splits it lists are the only ones list_shards reads.
"""
import dataclasses
import os
import random
import re

import tensorflow.compat.v1 as tf

from datasets import dataset_info as ds_info
from datasets import tfrecord_schema as keys
from datasets.voc_reader import SampleError, find_image, load_image, parse_voc_xml, repair_boxes
from utils.errors import UserError

ANNOTATIONS_DIR = 'Annotations'
IMAGES_DIR = 'JPEGImages'
SPLITS_DIR = os.path.join('ImageSets', 'Main')
PARTIAL_SUFFIX = '.partial'
REPORT_FILENAME = 'conversion_report.txt'
ISSUE_KINDS = ('excluded', 'repaired', 'warning', 'kept', 'converted')


@dataclasses.dataclass
class Issue:
    kind: str              # one of ISSUE_KINDS
    path: str              # file the issue is about, relative to the dataset folder
    reason: str

    def __str__(self):
        return f'  {self.kind}: {self.path}: {self.reason}'


@dataclasses.dataclass
class ConversionResult:
    info: ds_info.DatasetInfo
    shards: dict           # split -> list of shard paths
    issues: list

    def count(self, kind):
        return sum(issue.kind == kind for issue in self.issues)


def _feature(kind, values):
    """tf.train.Feature of kind 'int64' | 'float' | 'bytes' holding the list values."""
    list_type = {'int64': tf.train.Int64List, 'float': tf.train.FloatList, 'bytes': tf.train.BytesList}[kind]
    return tf.train.Feature(**{f'{kind}_list': list_type(value=values)})


def make_example(encoded, image_format, height, width, objects, class_index):
    """tf.train.Example with SSD-Tensorflow's keys; boxes normalised: x / width, y / height."""
    def column(attribute, scale):
        return _feature('float', [getattr(obj, attribute) / scale for obj in objects])

    def per_object(kind, value_of):
        return _feature(kind, [value_of(obj) for obj in objects])
    return tf.train.Example(features=tf.train.Features(feature={
        keys.HEIGHT: _feature('int64', [height]), keys.WIDTH: _feature('int64', [width]),
        keys.CHANNELS: _feature('int64', [3]), keys.SHAPE: _feature('int64', [height, width, 3]),
        keys.FORMAT: _feature('bytes', [image_format.encode()]),
        keys.ENCODED: _feature('bytes', [encoded]),
        **{key: column(coordinate, height if coordinate[0] == 'y' else width)
           for coordinate, key in keys.BOX_KEYS.items()},
        keys.LABEL: per_object('int64', lambda obj: class_index[obj.name]),
        keys.LABEL_TEXT: per_object('bytes', lambda obj: obj.name.encode('utf-8')),
        keys.DIFFICULT: per_object('int64', lambda obj: obj.difficult),
        keys.TRUNCATED: per_object('int64', lambda obj: obj.truncated),
    }))


class ShardWriter:
    """Writes records into <name>_<split>_<NNN>.tfrecord shards of samples_per_file records each.

    Each shard is written as '<shard>.partial' and os.replace'd onto its name once closed, so no
    '*.tfrecord' ever holds a half-written shard; on an exception the partial file is deleted."""

    def __init__(self, output_dir, dataset_name, split_name, samples_per_file):
        self._prefix = os.path.join(output_dir, f'{dataset_name}_{split_name}_')
        self._samples_per_file = samples_per_file
        self._writer, self._count, self.paths = None, 0, []

    def write(self, serialized):
        if self._writer is None:
            self.paths.append(f'{self._prefix}{len(self.paths):03d}.tfrecord')
            self._writer = tf.io.TFRecordWriter(self.paths[-1] + PARTIAL_SUFFIX)
        self._writer.write(serialized)
        self._count += 1
        if self._count == self._samples_per_file:
            self._finish_shard()

    def _finish_shard(self):
        self._writer.close()
        os.replace(self.paths[-1] + PARTIAL_SUFFIX, self.paths[-1])
        self._writer, self._count = None, 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self._writer is None:
            return
        if exc_type is None:
            self._finish_shard()
            return
        self._writer.close()
        os.remove(self.paths.pop() + PARTIAL_SUFFIX)


def _remove_stale_shards(output_dir, dataset_name, split_name, keep):
    """Delete this dataset's older shards of split_name (and leftover .partial files) not in keep."""
    pattern = re.compile(rf'{re.escape(dataset_name)}_{re.escape(split_name)}_\d+\.tfrecord'
                         rf'({re.escape(PARTIAL_SUFFIX)})?')
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if pattern.fullmatch(name) and path not in keep:
            os.remove(path)


def _annotation_stems(annotations_dir):
    """Sorted file stems of annotations_dir/*.xml."""
    return sorted(name[:-4] for name in os.listdir(annotations_dir) if name.lower().endswith('.xml'))


def _split_lists(splits_dir):
    """split -> ids from ImageSets/Main/<split>.txt (first word per line); VOC's per-class
    '<class>_<split>.txt' lists are skipped."""
    if not os.path.isdir(splits_dir):
        return {}
    stems = [name[:-4] for name in sorted(os.listdir(splits_dir)) if name.endswith('.txt')]
    lists = {}
    for stem in stems:
        if any(stem.endswith('_' + other) for other in stems if other != stem):
            continue
        with open(os.path.join(splits_dir, stem + '.txt'), encoding='utf-8', errors='replace') as source:
            lists[stem] = [line.split()[0] for line in source if line.split()]
    return lists


def plan_splits(dataset_dir, split_name=None, validation_fraction=0.0, seed=0):
    """split -> annotation stems. With ImageSets/Main lists: every list (or only split_name).
    Without: all Annotations/*.xml as split_name (default 'train'); validation_fraction > 0 moves
    round(fraction * n) of them, chosen by a random.Random(seed) sample, into 'test'."""
    annotations_dir = os.path.join(dataset_dir, ANNOTATIONS_DIR)
    if not os.path.isdir(annotations_dir):
        raise UserError(f'{dataset_dir}: no {ANNOTATIONS_DIR}/ folder (expected Pascal VOC layout: '
                        f'{ANNOTATIONS_DIR}/*.xml and {IMAGES_DIR}/*.jpg)')
    if not 0.0 <= validation_fraction < 1.0:
        raise UserError(f'--validation_fraction={validation_fraction}: must be in [0, 1)')
    lists = _split_lists(os.path.join(dataset_dir, SPLITS_DIR))
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
    stems = _annotation_stems(annotations_dir)
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


def _parse_all(dataset_dir, splits, issues):
    """stem -> VocAnnotation for every listed stem that parses; failures become 'excluded' issues."""
    parsed = {}
    for stem in dict.fromkeys(s for stems in splits.values() for s in stems):
        relative = os.path.join(ANNOTATIONS_DIR, stem + '.xml')
        try:
            parsed[stem] = parse_voc_xml(os.path.join(dataset_dir, relative))
        except SampleError as err:
            issues.append(Issue('excluded', relative, str(err)))
    return parsed


def _class_names_in_annotations(dataset_dir, parsed):
    """Sorted object names over every Annotations/*.xml, not only this run's splits, so that splits
    converted one at a time get the same label ids. parsed: stem -> annotation already read."""
    names = {obj.name for annotation in parsed.values() for obj in annotation.objects}
    annotations_dir = os.path.join(dataset_dir, ANNOTATIONS_DIR)
    for stem in _annotation_stems(annotations_dir):
        if stem not in parsed:
            try:
                annotation = parse_voc_xml(os.path.join(annotations_dir, stem + '.xml'))
                names.update(obj.name for obj in annotation.objects)
            except SampleError:
                pass  # not in this run's splits: reported when its split is converted
    return sorted(names)


def _build_sample(dataset_dir, stem, annotation, class_index):
    """(serialized Example, kept objects, [(kind, reason)]) of one sample; SampleError to leave it out."""
    unknown = sorted({obj.name for obj in annotation.objects} - set(class_index))
    if unknown:
        raise SampleError(f'class {", ".join(map(repr, unknown))} not in the label list')
    image_path = find_image(os.path.join(dataset_dir, IMAGES_DIR), annotation.filename, stem)
    if image_path is None:
        named = f'{IMAGES_DIR}/{annotation.filename} nor ' if annotation.filename else ''
        raise SampleError(f'image not found: no {named}{IMAGES_DIR}/{stem}.jpg/.jpeg/.png')
    encoded, image_format, height, width, converted = load_image(image_path)
    notes = [('converted', converted)] if converted else []
    if annotation.size is not None and annotation.size != (height, width):
        xml_height, xml_width = annotation.size
        notes.append(('warning', f'<size> {xml_width}x{xml_height} differs from the real image size '
                                 f'{width}x{height} of {os.path.basename(image_path)}: real size used'))
    objects, repairs = repair_boxes(annotation.objects, height, width)
    notes += [('repaired', reason) for reason in repairs]
    if not objects:
        notes.append(('kept', 'no objects: kept as a background-only sample'))
    example = make_example(encoded, image_format, height, width, objects, class_index)
    return example.SerializeToString(), objects, notes


def _write_split(dataset_dir, output_dir, dataset_name, split, stems, parsed, class_index,
                 samples_per_file, issues, boxes_per_class, on_image_done):
    """Write one split's shards; -> (shard paths, records written). Appends to issues, boxes_per_class."""
    written = 0
    with ShardWriter(output_dir, dataset_name, split, samples_per_file) as writer:
        for stem in stems:
            relative = os.path.join(ANNOTATIONS_DIR, stem + '.xml')
            try:
                if stem in parsed:  # else already reported by _parse_all
                    serialized, objects, notes = _build_sample(dataset_dir, stem, parsed[stem], class_index)
                    writer.write(serialized)
                    written += 1
                    for obj in objects:
                        boxes_per_class[obj.name] += 1
                    issues += [Issue(kind, relative, reason) for kind, reason in notes]
            except SampleError as err:
                issues.append(Issue('excluded', relative, str(err)))
            on_image_done()
    _remove_stale_shards(output_dir, dataset_name, split, set(writer.paths))
    return writer.paths, written


def format_summary(result, output_dir, max_lines_per_kind=20):
    """Summary lines: totals, then each issue, at most max_lines_per_kind of each kind."""
    written = {split: result.info.num_samples[split] for split in result.shards}
    counts = ', '.join(f'{split} {n}' for split, n in written.items())
    shards = sum(len(paths) for paths in result.shards.values())
    lines = [f'Wrote {sum(written.values())} images ({counts}) in {shards} shard(s) to '
             f'{output_dir}; ' + ', '.join(f'{kind} {result.count(kind)}' for kind in ISSUE_KINDS) + '.']
    for kind in ISSUE_KINDS:
        issues = [issue for issue in result.issues if issue.kind == kind]
        lines += [str(issue) for issue in issues[:max_lines_per_kind]]
        if len(issues) > max_lines_per_kind:
            lines.append(f'  ... and {len(issues) - max_lines_per_kind} more {kind}; all are listed in '
                         f'{os.path.join(output_dir, REPORT_FILENAME)}')
    return lines


def _count_boxes(paths, class_names):
    """class name -> boxes in the records of the shards paths, by label id (class_names[0] = 'none')."""
    counts = dict.fromkeys(class_names[1:], 0)
    for path in paths:
        try:
            for record in tf.io.tf_record_iterator(path):
                for label in tf.train.Example.FromString(record).features.feature[keys.LABEL].int64_list.value:
                    if not 0 < label < len(class_names):
                        raise UserError(f'{path}: label {label} outside 1..{len(class_names) - 1}')
                    counts[class_names[label]] += 1
        except tf.errors.DataLossError as err:
            raise UserError(f'{path}: corrupt TFRecord shard ({err.message})') from None
    return counts


def _previous_info(output_dir, dataset_name, merging, log_fn):
    """output_dir's dataset_info.json when it describes dataset_name, else None. An unreadable one is
    an error when merging (its splits would be lost silently), else it is replaced."""
    path = os.path.join(output_dir, ds_info.INFO_FILENAME)
    if not os.path.isfile(path):
        return None
    try:
        info = ds_info.load_dataset_info(output_dir)
    except UserError as err:
        if merging:
            raise UserError(f'{err}; fix it, or delete it and convert every split again') from None
        log_fn(f'Replacing the unreadable {path}')
        return None
    if info.name != dataset_name:
        log_fn(f'Replacing {path} of dataset {info.name!r} by one of {dataset_name!r}')
        return None
    return info


def _kept_splits(output_dir, previous, rewritten, log_fn):
    """(split -> samples, class name -> boxes) of previous's splits not in rewritten, boxes counted in
    their shards; a split whose shards are gone is dropped, with a log line."""
    num_samples, boxes = {}, dict.fromkeys(previous.class_names[1:], 0)
    for split, count in previous.num_samples.items():
        if split in rewritten:
            continue
        try:
            paths = ds_info.list_shards(output_dir, split, previous.name)
        except UserError:
            log_fn(f'Dropping split {split!r} from {ds_info.INFO_FILENAME}: its shards are gone')
            continue
        for name, number in _count_boxes(paths, previous.class_names).items():
            boxes[name] += number
        num_samples[split] = count
    if num_samples:
        log_fn(f'Keeping {", ".join(f"{s} {n}" for s, n in num_samples.items())} from {ds_info.INFO_FILENAME}')
    return num_samples, boxes


def convert_voc_dataset(dataset_dir, output_dir, dataset_name='commodity', split_name=None,
                        validation_fraction=0.0, samples_per_file=200, class_names=None, seed=0,
                        log_fn=print, progress_fn=None):
    """Convert a VOC folder into shards + dataset_info.json in output_dir; log a summary.

    split_name None converts every split (each ImageSets/Main list, or all images as 'train' plus the
    validation 'test') and replaces the dataset: shards of the splits its old dataset_info.json listed
    and this run does not write are removed. A split_name converts that split (plus 'test' with
    validation_fraction) and merges it into output_dir's dataset_info.json of the same dataset_name:
    the other splits' sample counts are kept, their boxes counted in their shards, and the class
    names must be the same. class_names: object classes in label order (label 1 first), or None for
    the sorted set of names in every Annotations/*.xml. progress_fn(done, total), when given, is
    called after each image. Returns a ConversionResult (info: the whole dataset; shards: this run's).
    Raises UserError for an unusable folder or flag, for class names differing from the dataset's,
    and (after logging the summary) when no sample at all could be written."""
    if samples_per_file < 1:
        raise UserError(f'--samples_per_file={samples_per_file}: must be at least 1')
    splits = plan_splits(dataset_dir, split_name, validation_fraction, seed)
    issues = []
    parsed = _parse_all(dataset_dir, splits, issues)
    class_source = 'the class list given'
    if class_names is None:
        class_names = _class_names_in_annotations(dataset_dir, parsed)
        class_source = f'the names in {os.path.join(dataset_dir, ANNOTATIONS_DIR)}'
        if parsed and not class_names:
            raise UserError(f'{dataset_dir}: the annotations name no object class; pass --labels_file')
    all_names = ds_info.with_background(class_names)
    class_index = {name: label for label, name in enumerate(all_names)}
    os.makedirs(output_dir, exist_ok=True)
    info_path = os.path.join(output_dir, ds_info.INFO_FILENAME)
    previous = _previous_info(output_dir, dataset_name, split_name is not None, log_fn)
    num_samples, boxes_per_class = {}, dict.fromkeys(class_names, 0)
    if split_name is not None and previous:
        if previous.class_names != all_names:
            raise UserError(f'{info_path}: its classes ({", ".join(previous.class_names[1:])}) differ from '
                            f'this run\'s ({", ".join(class_names)}: {class_source}), so label ids would not '
                            f'match; pass the same --labels_file for every split, or delete {info_path}')
        num_samples, boxes_per_class = _kept_splits(output_dir, previous, set(splits), log_fn)
    if num_samples:  # while writing, the json lists only the complete, kept splits
        ds_info.write_dataset_info(output_dir, ds_info.DatasetInfo(dataset_name, all_names, num_samples,
                                                                   boxes_per_class))
    elif os.path.exists(info_path):
        os.remove(info_path)
    total, done = sum(map(len, splits.values())), [0]

    def on_image_done():
        done[0] += 1
        if progress_fn:
            progress_fn(done[0], total)
    shards = {}
    for split, stems in splits.items():
        shards[split], num_samples[split] = _write_split(
            dataset_dir, output_dir, dataset_name, split, stems, parsed, class_index, samples_per_file,
            issues, boxes_per_class, on_image_done)
    info = ds_info.DatasetInfo(dataset_name, all_names, num_samples, boxes_per_class)
    result = ConversionResult(info, shards, issues)
    with open(os.path.join(output_dir, REPORT_FILENAME), 'w') as report:
        report.write('\n'.join(format_summary(result, output_dir, max_lines_per_kind=len(issues))) + '\n')
    for line in format_summary(result, output_dir):
        log_fn(line)
    if not sum(num_samples[split] for split in shards):
        raise UserError(f'{dataset_dir}: no usable sample was written ({result.count("excluded")} excluded, '
                        f'see the summary above)')
    if split_name is None and previous:
        for split in sorted(set(previous.num_samples) - set(shards)):
            _remove_stale_shards(output_dir, dataset_name, split, keep=())
            log_fn(f'Removed the shards of split {split!r}, which this conversion no longer writes')
    ds_info.write_dataset_info(output_dir, info)
    return result
