"""Pascal VOC folder (Annotations/*.xml, JPEGImages/*, optional ImageSets/Main/<split>.txt) -> TFRecords.

Which image goes into which split is datasets/voc_splits.py's part; reading each sample (XML, image bytes
and their RGB conversion, box clipping) datasets/voc_reader.py's; records and shards
datasets/tfrecord_writer.py's (SSD-Tensorflow's feature keys and box normalisation). This module runs a
conversion: it names each sample's problems and keeps dataset_info.json right.

Bad input never stops the run: each sample left out, repaired or converted is an Issue, listed in the
summary (20 per kind) and in full in conversion_report.txt beside the shards. A conversion of every split
replaces the dataset; one of a single split (SSD-Tensorflow's way: train, then test, into one folder)
merges into the dataset_info.json there. The new shards are written into a staging folder inside the output
folder and moved in at the end, dataset_info.json last, so until then the previous dataset stays whole and
usable (a conversion killed midway leaves it as it was; the next one clears the staging folder).
"""
import dataclasses
import os
import shutil
import tempfile

from datasets import conversion_checks
from datasets.conversion_checks import ISSUE_KINDS, Issue
from datasets import dataset_info as ds_info
from datasets.split_boxes import count_boxes
from datasets.tfrecord_writer import ShardWriter, make_example, remove_stale_shards
from datasets.voc_reader import (SampleError, boxes_frame_note, drawn_on_stored, find_image, load_image,
                                 fit_to_image, missing_image_reason, parse_voc_xml, repair_boxes, turn_upright)
from datasets.voc_splits import ANNOTATIONS_DIR, IMAGES_DIR, SPLITS_DIR, annotation_files, plan_splits, split_list_names
from utils import file_io
from utils.errors import UserError

REPORT_FILENAME = 'conversion_report.txt'
STAGING_PREFIX = '.converting-'   # the folder inside output_dir where a conversion writes its shards
# SSD300's smallest random crop spans 0.3 / sqrt(2) = 0.21 of an image side (preprocessing's crop sampler),
# so a shorter side of 1536 still gives it 300+ pixels, while a phone's 12 MP photo holds 4x fewer pixels to
# decode at every step (bench/RESULTS.md, "Large photos"). ssd_512_vgg's crop wants 512 / 0.21 = 2415.
DEFAULT_MAX_SHORT_SIDE = 1536


@dataclasses.dataclass
class ConversionOptions:
    """What a conversion makes of a VOC folder (tf_convert_data.py's flags, as values)."""
    dataset_name: str = 'commodity'   # the shards' prefix and dataset_info.json's name
    split_name: str = None            # None: every split, replacing the dataset; a name: that split, merged
    validation_fraction: float = 0.0  # without split lists: this fraction of the images goes into 'test'
    samples_per_file: int = 200       # records per shard
    class_names: list = None          # label order (label 1 first); None: sorted names in all annotations
    seed: int = 0                     # of the validation split
    max_short_side: int = DEFAULT_MAX_SHORT_SIDE   # shorter sides over this are downscaled to it; 0: no limit
    split_lists: bool = True          # False: ImageSets/Main lists ignored, every annotation in split_name


class _UnknownClasses(SampleError):
    """A sample left out for class names the label list lacks (`names`)."""

    def __init__(self, names):
        super().__init__(f'class {", ".join(map(repr, names))} not in the label list')
        self.names = tuple(names)


@dataclasses.dataclass
class ConversionResult:
    info: ds_info.DatasetInfo
    shards: dict           # split -> list of shard paths
    issues: list
    downscaled: int = 0    # images stored downscaled to max_short_side
    max_short_side: int = 0
    kept_large: int = 0    # with max_short_side 0: images stored with a shorter side over the default limit

    def count(self, kind):
        return sum(issue.kind == kind for issue in self.issues)


@dataclasses.dataclass
class _Annotations:
    """A VOC folder's annotations as read for one conversion."""
    dataset_dir: str
    splits: dict           # split -> annotation stems
    listed: bool           # whether the splits are ImageSets/Main lists
    files: dict            # stem -> file name of every Annotations/*.xml
    parsed: dict           # stem -> VocAnnotation, for the stems whose XML parses
    issues: list           # Issues so far: the XML files that do not parse

    def relative_path(self, stem):
        """Annotations/<stem>.xml as the file is named ('.XML' too), relative to the dataset folder."""
        return os.path.join(ANNOTATIONS_DIR, self.files.get(stem, stem + '.xml'))

    def split_source(self, split):
        """Where a split's images are named: its ImageSets/Main/<split>.txt, or Annotations/."""
        return os.path.join(SPLITS_DIR, split + '.txt') if self.listed else ANNOTATIONS_DIR


def _read_annotations(dataset_dir, options):
    splits = plan_splits(dataset_dir, options.split_name, options.validation_fraction, options.seed,
                         options.split_lists)
    listed = options.split_lists and bool(split_list_names(dataset_dir))
    annotations = _Annotations(dataset_dir, splits, listed,
                               annotation_files(os.path.join(dataset_dir, ANNOTATIONS_DIR)), {}, [])
    annotations.issues.extend(conversion_checks.shared_test_images(annotations))
    _parse_all(annotations)
    annotations.issues.extend(conversion_checks.images_without_annotation(annotations))
    return annotations


def _parse_all(annotations):
    """Fill annotations.parsed for every listed stem that parses; failures, and stems a split list names
    without an XML, become 'excluded' issues."""
    first_split = {}
    for split, stems in annotations.splits.items():
        for stem in stems:
            first_split.setdefault(stem, split)
    for stem, split in first_split.items():
        relative = annotations.relative_path(stem)
        if stem not in annotations.files:
            annotations.issues.append(Issue('excluded', relative, f'listed in {annotations.split_source(split)}, '
                                                                  f'but does not exist'))
            continue
        try:
            annotations.parsed[stem] = parse_voc_xml(os.path.join(annotations.dataset_dir, relative))
        except SampleError as err:
            annotations.issues.append(Issue('excluded', relative, str(err)))


def _class_names_in_annotations(annotations):
    """Sorted object names over every Annotations/*.xml, not only this run's splits, so that splits
    converted one at a time get the same label ids."""
    names = {obj.name for annotation in annotations.parsed.values() for obj in annotation.objects}
    for stem in annotations.files:
        if stem not in annotations.parsed:
            try:
                annotation = parse_voc_xml(os.path.join(annotations.dataset_dir, annotations.relative_path(stem)))
                names.update(obj.name for obj in annotation.objects)
            except SampleError:
                pass  # not in this run's splits: reported when its split is converted
    return sorted(names)


def _build_sample(dataset_dir, stem, annotation, class_index, max_short_side):
    """(serialized Example, kept objects, [(kind, reason)], its LoadedImage, its image path) of one sample;
    SampleError to leave it out."""
    unknown = sorted({obj.name for obj in annotation.objects} - set(class_index))
    if unknown:
        raise _UnknownClasses(unknown)
    images_dir = os.path.join(dataset_dir, IMAGES_DIR)
    image_path = find_image(images_dir, annotation.filename, stem)
    if image_path is None:
        raise SampleError(missing_image_reason(IMAGES_DIR, annotation.filename, stem))
    loaded = load_image(image_path, max_short_side)
    converted = '; '.join(filter(None, [loaded.note, boxes_frame_note(loaded, annotation.size)]))
    notes = [('converted', converted)] if converted else []
    own_image = find_image(images_dir, '', stem)
    if own_image not in (None, image_path):   # a copied XML whose <filename> was not changed, usually
        notes.append(('warning', f'<filename> names {os.path.basename(image_path)}, though '
                                 f'{os.path.basename(own_image)} exists too: the boxes go on '
                                 f'{os.path.basename(image_path)}'))
    on_stored, frame_warning = drawn_on_stored(loaded, annotation.size)
    notes += [('warning', frame_warning)] if frame_warning else []
    height, width = loaded.stored_size if on_stored else (loaded.height, loaded.width)   # of the boxes' image
    objects, size_note = fit_to_image(annotation.objects, annotation.size, height, width,
                                      os.path.basename(image_path))
    notes += [size_note] if size_note else []
    objects, repairs = repair_boxes(objects, height, width)
    notes += [('repaired', reason) for reason in repairs]
    if on_stored:
        objects = turn_upright(objects, loaded.orientation, height, width)
    if not objects:
        notes.append(('background-only', 'no objects: kept as a background-only sample'))
    example = make_example(loaded.encoded, loaded.image_format, *loaded.encoded_size, objects, class_index,
                           box_frame=(loaded.height, loaded.width))
    return example.SerializeToString(), objects, notes, loaded, image_path


def _label_names(annotations, class_names):
    """(class names in label order, 'none' first; where they come from, for error messages)."""
    if class_names is not None:
        return ds_info.with_background(class_names), 'the class list given'
    class_names = _class_names_in_annotations(annotations)
    if annotations.parsed and not class_names:
        raise UserError(f'{annotations.dataset_dir}: the annotations name no object class; pass --labels_file')
    return (ds_info.with_background(class_names),
            f'the names in {os.path.join(annotations.dataset_dir, ANNOTATIONS_DIR)}')


class _SplitWriter:
    """Writes the splits of one conversion into shards, tallying issues, boxes per class and progress
    over all of them; progress_fn(done, total), when given, is called after each image."""

    def __init__(self, annotations, staging_dir, options, all_names, boxes_per_class, progress_fn):
        self._annotations, self._staging_dir, self._options = annotations, staging_dir, options
        self._class_index = {name: label for label, name in enumerate(all_names)}
        self.boxes_per_class, self._progress_fn = boxes_per_class, progress_fn
        self.split_boxes = {}   # split -> {class name: boxes this run wrote in it}, in class order
        self._done, self._total = 0, sum(map(len, annotations.splits.values()))
        self.downscaled = self.kept_large = 0
        self._xml_of_image = {}   # image path -> the first annotation written with it, relative

    def write(self, split):
        """Write one split's shards into the staging folder; -> (shard paths, records written)."""
        written, source = 0, self._annotations
        self.split_boxes[split] = dict.fromkeys(self.boxes_per_class, 0)
        with ShardWriter(self._staging_dir, self._options.dataset_name, split,
                         self._options.samples_per_file) as writer:
            for stem in source.splits[split]:
                if stem in source.parsed:  # else already reported by _parse_all
                    written += self._write_sample(writer, split, stem)
                self._done += 1
                if self._progress_fn:
                    self._progress_fn(self._done, self._total)
        return writer.paths, written

    def _write_sample(self, writer, split, stem):
        """1 when the sample was written, 0 when it is left out (an 'excluded' issue)."""
        source = self._annotations
        relative = source.relative_path(stem)
        try:
            serialized, objects, notes, loaded, image_path = _build_sample(
                source.dataset_dir, stem, source.parsed[stem], self._class_index, self._options.max_short_side)
        except SampleError as err:
            unknown = err.names if isinstance(err, _UnknownClasses) else ()
            source.issues.append(Issue('excluded', relative, str(err), unknown))
            return 0
        writer.write(serialized)
        self.downscaled += loaded.downscaled_size is not None
        self.kept_large += min(loaded.encoded_size) > DEFAULT_MAX_SHORT_SIDE
        for obj in objects:
            self.boxes_per_class[obj.name] += 1
            self.split_boxes[split][obj.name] += 1
        first_xml = self._xml_of_image.setdefault(image_path, relative)
        if first_xml != relative:
            notes.append(('warning', f'{os.path.relpath(image_path, source.dataset_dir)} is also the image of '
                                     f'{first_xml}: two records of one image'))
        source.issues.extend(Issue(kind, relative, reason) for kind, reason in notes)
        return 1


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
        if kind == 'excluded':
            lines += conversion_checks.unknown_class_lines(issues, result.info.class_names)
    if result.downscaled:
        lines.append(f'  {result.downscaled} image(s) with a shorter side over {result.max_short_side} px stored '
                     f'downscaled to it (--max_short_side; 0 keeps every image\'s resolution)')
    if result.kept_large and not result.max_short_side:
        lines.append(f'  {result.kept_large} image(s) with a shorter side over {DEFAULT_MAX_SHORT_SIDE} px kept at '
                     f'full size (--max_short_side=0): training decodes each at every step, a 12 MP photo in '
                     f'about 50 ms of CPU')
    return lines


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
        for name, number in count_boxes(paths, previous.class_names).items():
            boxes[name] += number
        num_samples[split] = count
    if num_samples:
        log_fn(f'Keeping {", ".join(f"{s} {n}" for s, n in num_samples.items())} from {ds_info.INFO_FILENAME}')
    return num_samples, boxes


def _start_output(output_dir, options, all_names, class_source, rewritten, log_fn):
    """Make output_dir ready for writing the splits rewritten (a staging folder left by a killed conversion is
    removed); -> (its previous DatasetInfo or None, kept split -> samples, class name -> boxes in the kept
    splits). When merging (options.split_name given) into a dataset of the same name, its classes must be
    all_names and its other splits are kept."""
    os.makedirs(output_dir, exist_ok=True)
    for name in os.listdir(output_dir):
        if name.startswith(STAGING_PREFIX):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    info_path = os.path.join(output_dir, ds_info.INFO_FILENAME)
    merging = options.split_name is not None
    previous = _previous_info(output_dir, options.dataset_name, merging, log_fn)
    num_samples, boxes_per_class = {}, dict.fromkeys(all_names[1:], 0)
    if merging and previous:
        if previous.class_names != all_names:
            raise UserError(f'{info_path}: its classes ({", ".join(previous.class_names[1:])}) differ from '
                            f'this run\'s ({", ".join(all_names[1:])}: {class_source}), so label ids would not '
                            f'match; pass the same --labels_file for every split, or delete {info_path}')
        num_samples, boxes_per_class = _kept_splits(output_dir, previous, rewritten, log_fn)
    return previous, num_samples, boxes_per_class


def _finish(result, dataset_dir, output_dir, replaced, log_fn):
    """Report, then publish: the staged shards replace the rewritten splits' old ones and result.shards names
    them in output_dir; result.info is written last. replaced: the DatasetInfo a full conversion replaces (its
    splits not rewritten lose their shards), or None."""
    issues = result.issues
    # UTF-8 in any locale (a Chinese class name), and whole: a conversion stopped mid-write keeps the last report.
    file_io.write_text_atomically(os.path.join(output_dir, REPORT_FILENAME),
                                  '\n'.join(format_summary(result, output_dir, max_lines_per_kind=len(issues))) + '\n')
    for line in format_summary(result, output_dir):
        log_fn(line)
    if not sum(result.info.num_samples[split] for split in result.shards):
        raise UserError(f'{dataset_dir}: no usable sample was written ({result.count("excluded")} excluded, '
                        f'see the summary above)')
    info_path = os.path.join(output_dir, ds_info.INFO_FILENAME)
    if os.path.exists(info_path):   # renames take milliseconds; were they cut short, no json lists a mix
        os.remove(info_path)
    for split, staged in result.shards.items():
        remove_stale_shards(output_dir, result.info.name, split, keep=())
        result.shards[split] = [os.path.join(output_dir, os.path.basename(path)) for path in staged]
        for source, destination in zip(staged, result.shards[split]):
            os.replace(source, destination)
    if replaced:
        for split in sorted(set(replaced.num_samples) - set(result.shards)):
            remove_stale_shards(output_dir, result.info.name, split, keep=())
            log_fn(f'Removed the shards of split {split!r}, which this conversion no longer writes')
    ds_info.write_dataset_info(output_dir, result.info)


def convert_voc_dataset(dataset_dir, output_dir, options=None, log_fn=print, progress_fn=None):
    """Convert a VOC folder into shards + dataset_info.json in output_dir as options (a ConversionOptions,
    None: its defaults) say; log a summary.

    options.split_name None converts every split (each ImageSets/Main list, or all images as 'train'
    plus the validation 'test') and replaces the dataset: shards of the splits its old dataset_info.json
    listed and this run does not write are removed. A split_name converts that split (plus 'test' with
    validation_fraction) and merges it into output_dir's dataset_info.json of the same dataset_name:
    the other splits' sample counts are kept, their boxes counted in their shards, and the class
    names must be the same. progress_fn(done, total), when given, is called after each image.
    Returns a ConversionResult (info: the whole dataset; shards: this run's). Raises UserError for an
    unusable folder or option, for class names differing from the dataset's, and (after logging the
    summary) when no sample at all could be written."""
    options = options or ConversionOptions()
    if options.samples_per_file < 1:
        raise UserError(f'--samples_per_file={options.samples_per_file}: must be at least 1')
    if options.max_short_side < 0:
        raise UserError(f'--max_short_side={options.max_short_side}: must be 0 (no limit) or more')
    annotations = _read_annotations(dataset_dir, options)
    all_names, class_source = _label_names(annotations, options.class_names)
    annotations.issues.extend(conversion_checks.look_alike_names(all_names, class_source))
    previous, num_samples, boxes_per_class = _start_output(output_dir, options, all_names, class_source,
                                                           set(annotations.splits), log_fn)
    staging_dir = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir)
    try:
        writer = _SplitWriter(annotations, staging_dir, options, all_names, boxes_per_class, progress_fn)
        shards = {}
        for split in annotations.splits:
            shards[split], num_samples[split] = writer.write(split)
            if not num_samples[split]:
                annotations.issues.append(Issue('warning', annotations.split_source(split),
                                                f'split {split!r} has 0 images: none of its entries could be used '
                                                f'(see the excluded lines)'))
        annotations.issues.extend(conversion_checks.normalised_coordinates(annotations.parsed, boxes_per_class))
        annotations.issues.extend(conversion_checks.classes_without_boxes(boxes_per_class, class_source))
        annotations.issues.extend(conversion_checks.classes_missing_from_training(
            writer.split_boxes, annotations.split_source, annotations.listed))
        info = ds_info.DatasetInfo(options.dataset_name, all_names, num_samples, boxes_per_class)
        result = ConversionResult(info, shards, annotations.issues, writer.downscaled, options.max_short_side,
                                  writer.kept_large)
        _finish(result, dataset_dir, output_dir, previous if options.split_name is None else None, log_fn)
    finally:   # a failure, Ctrl-C included, leaves the previous dataset as it was
        shutil.rmtree(staging_dir, ignore_errors=True)
    return result
