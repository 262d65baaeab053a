"""Convert a Pascal VOC folder (e.g. labelImg output in IMAGE/) into TFRecord shards.

    python tf_convert_data.py --dataset_dir=IMAGE --output_dir=IMAGE/tfrecords --dataset_name=commodity \\
        --validation_fraction=0.2

Writes <dataset_name>_<split>_<NNN>.tfrecord and dataset_info.json into --output_dir; one set of
shards per ImageSets/Main/<split>.txt list, or, without lists, one set named 'train' plus an optional
'test' split of --validation_fraction of the images; this replaces the dataset in --output_dir.
A split named by --split_name (or --output_name) is converted alone and added to the dataset already
there, so splits may be converted one at a time, e.g. from VOC's separate train and test folders.
SSD-Tensorflow's spellings work too: --output_name=voc_2007_train means dataset 'voc_2007', split
'train', made as SSD-Tensorflow's converter makes it, of every annotation in the folder (ImageSets lists
are not read); --dataset_name=pascalvoc (or pascalvoc_2007 / pascalvoc_2012) selects the built-in VOC
class list.
The summary ends with the anchor fit of each SSD model on the training split's boxes (the best possible
recall of its built-in anchors, the box sizes, and what would help when few boxes can be matched), and a
note when the dataset has no 'test' split for evaluation.
Exit status 1 when a flag or the folder is unusable, or when no image at all could be written.
"""
import os
import sys

from utils import script_setup  # first: sets TensorFlow's environment before it loads

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import flags  # noqa: E402

from datasets import conversion_checks, dataset_info, split_boxes  # noqa: E402
from datasets.voc_splits import ANNOTATIONS_DIR, CVAT_LIST, SPLITS_DIR, split_list_names  # noqa: E402
from datasets.voc_to_tfrecords import DEFAULT_MAX_SHORT_SIDE, ConversionOptions, convert_voc_dataset  # noqa: E402
from utils import anchor_report  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.file_io import check_writable_folder  # noqa: E402

flags.DEFINE_string('dataset_dir', None, 'VOC folder: Annotations/, JPEGImages/, optional ImageSets/Main/.')
flags.DEFINE_string('output_dir', None, 'Folder for the shards and dataset_info.json '
                    '(default: <dataset_dir>/tfrecords).')
flags.DEFINE_string('dataset_name', 'commodity', 'Dataset name, the shards\' prefix. pascalvoc, '
                    'pascalvoc_2007 or pascalvoc_2012 also select the built-in VOC class list.')
flags.DEFINE_string('output_name', None, 'SSD-Tensorflow spelling: "<dataset_name>_<split>", '
                    'e.g. voc_2007_train; overrides --dataset_name and --split_name, and like SSD-Tensorflow\'s '
                    'converter puts every annotation of the folder in that split (ImageSets lists unread).')
flags.DEFINE_string('split_name', 'train', 'Given explicitly: convert only this split (with lists, '
                    'only that list) and add it to the dataset in --output_dir, keeping its other splits.')
flags.DEFINE_float('validation_fraction', 0.0, 'Without split lists: fraction of the images moved '
                   '(deterministically, by --seed) into a "test" split.')
flags.DEFINE_integer('samples_per_file', 200, 'Records per shard.')
flags.DEFINE_string('labels_file', None, 'Class names, one per line, in label order (label 1 first), '
                    'or a built-in list name (pascalvoc_2007, pascalvoc_2012). Default: <dataset_dir>/labels.txt '
                    'when there, else the sorted set of names in all of Annotations/.')
flags.DEFINE_integer('seed', 0, 'Seed of the --validation_fraction split.')
flags.DEFINE_integer('max_short_side', DEFAULT_MAX_SHORT_SIDE, 'Images whose shorter side is over this many '
                     'pixels are stored downscaled to it (aspect kept): training decodes each image at every '
                     'step, and SSD300\'s smallest random crop still gets 300+ pixels at 1536 (ssd_512_vgg: use '
                     '2560). 0 keeps every image\'s resolution.')
FLAGS = flags.FLAGS

_KNOWN_SPLITS = ('trainval', 'train', 'val', 'test')
LABELS_FILENAME = 'labels.txt'   # in --dataset_dir: the class names, read without --labels_file


class ProgressBar:
    """'[#####.....] done/total images' on stream: redrawn in place on a terminal (every 1%),
    a new line every 25% otherwise (logs)."""

    def __init__(self, stream, width=30):
        self._stream, self._width, self._shown = stream, width, -1
        self._tty = stream.isatty()

    def __call__(self, done, total):
        step = 100 * done // total // (1 if self._tty else 25)
        if step == self._shown:
            return
        self._shown, filled = step, self._width * done // total
        line = f'[{"#" * filled}{"." * (self._width - filled)}] {done}/{total} images'
        self._stream.write(f'\r{line}' + ('\n' if done == total else '') if self._tty else f'{line}\n')
        self._stream.flush()


def _names_from_output_name(output_name):
    """'voc_2007_train' -> ('voc_2007', 'train'); a name without a known split suffix -> (name, None)."""
    for split in _KNOWN_SPLITS:
        if output_name.endswith('_' + split):
            return output_name[:-len(split) - 1], split
    return output_name, None


def _class_names(labels_file, dataset_name, dataset_dir):
    """Object class names from --labels_file (a file or a built-in list), a built-in dataset name, the
    dataset folder's labels.txt, or None (the sorted names in the annotations); -> (names, the labels.txt
    read without --labels_file, or None)."""
    if labels_file and not os.path.isfile(labels_file) and dataset_info.builtin_class_names(labels_file):
        return dataset_info.builtin_class_names(labels_file), None
    if labels_file:
        return dataset_info.read_labels_file(labels_file), None
    if dataset_info.builtin_class_names(dataset_name):
        return dataset_info.builtin_class_names(dataset_name), None
    beside = os.path.join(dataset_dir, LABELS_FILENAME)
    if os.path.isfile(beside):
        return dataset_info.read_labels_file(beside), beside
    return None, None


def main(flag_values):
    tf.logging.set_verbosity(tf.logging.ERROR)  # the converter's own messages are the summary
    if not flag_values.dataset_dir:
        raise UserError('--dataset_dir is required (the folder holding Annotations/ and JPEGImages/)')
    dataset_name = flag_values.dataset_name
    split_name = flag_values.split_name if flag_values['split_name'].present else None
    if flag_values.output_name:
        dataset_name, output_split = _names_from_output_name(flag_values.output_name)
        split_name = output_split or split_name
    class_names, labels_beside = _class_names(flag_values.labels_file, flag_values.dataset_name,
                                              flag_values.dataset_dir)
    options = ConversionOptions(dataset_name=dataset_name, split_name=split_name,
                                validation_fraction=flag_values.validation_fraction,
                                samples_per_file=flag_values.samples_per_file,
                                class_names=class_names,
                                seed=flag_values.seed, max_short_side=flag_values.max_short_side,
                                split_lists=not flag_values.output_name)
    output_dir = flag_values.output_dir or os.path.join(flag_values.dataset_dir, 'tfrecords')
    check_writable_folder(output_dir, '--output_dir')
    print(f'Converting {flag_values.dataset_dir} -> {output_dir} (dataset {dataset_name}; '
          f'{_split_source(flag_values.dataset_dir, options)})')
    if labels_beside:
        print(f'Class names from {labels_beside}, in its order (label 1 first); --labels_file names another list')
    result = convert_voc_dataset(flag_values.dataset_dir, output_dir, options, log_fn=print,
                                 progress_fn=ProgressBar(sys.stderr))
    for line in _anchor_fit_lines(result) + _evaluation_split_lines(result, options.split_name):
        print(line)


def _split_source(dataset_dir, options):
    """Where the splits' images come from, for the first line: ImageSets lists or every annotation."""
    listed = split_list_names(dataset_dir) if options.split_lists else []
    if listed:
        names = [options.split_name] if options.split_name else listed
        return f'images listed in {os.path.join(dataset_dir, SPLITS_DIR)}/{", ".join(n + ".txt" for n in names)}'
    split = options.split_name or 'train'
    cvat_list = os.path.join(dataset_dir, SPLITS_DIR, CVAT_LIST + '.txt')
    if not options.split_lists:
        why = ', as SSD-Tensorflow\'s converter (--output_name)'
    elif os.path.isfile(cvat_list):   # the only list there, else it would be listed above
        why = f'; {cvat_list}, the only list, names every image (CVAT\'s export): no split list'
    else:
        why = ''
    return f'split {split!r}: every annotation in {os.path.join(dataset_dir, ANNOTATIONS_DIR)}{why}'


def _evaluation_split_lines(result, split_name):
    """A note when the dataset has no 'test' split, the one eval_ssd_network.py reads by default."""
    if 'test' in result.info.num_samples:
        return []
    if split_name:   # one split converted: the test split is another conversion into the same folder
        return [f"No 'test' split yet, which eval_ssd_network.py reads: convert it into the same --output_dir "
                f"(--split_name=test, or --output_name={result.info.name}_test from VOC's test folder)."]
    return ["No 'test' split, which eval_ssd_network.py reads: --validation_fraction=0.2 holds a fifth of the "
            "images out as one (or list the splits in ImageSets/Main)."]


def _anchor_fit_lines(result):
    """The anchor fit of each SSD model on the boxes of the training split this run wrote ('train', else
    'trainval', else its first split)."""
    written = [split for split in result.shards if result.shards[split]]
    if not written:
        return []
    split = conversion_checks.training_split(written)
    sample = split_boxes.split_boxes(result.shards[split], result.info.num_samples[split])
    return anchor_report.models_fit_lines(sample.boxes, f'split {split!r} ({sample.records} records)')


if __name__ == '__main__':
    script_setup.run_main(main, FLAGS)
