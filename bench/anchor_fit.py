"""How long the anchor fit takes on a VOC-sized split: reading the boxes back from the records, the BPR
report, and --anchor_sizes=auto's fit.

    python bench/anchor_fit.py --num_records=16000

Writes (once, kept in --work_dir) a synthetic split of --num_records records, each an image-sized random
payload (30-170 kB, 1.6 GB for 16k, like VOC's JPEGs) and 1-4 boxes with VOC-like sizes (sides log-normal
around 0.3 of the image), about 40k boxes for 16k records; then times each step --repeats times and prints
the median. The first read is from the page cache when the machine has the memory (it is written just before).
"""
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils import script_setup  # noqa: E402  (first: TensorFlow's environment)

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from absl import flags  # noqa: E402

from datasets import dataset_info, split_boxes, tfrecord_schema as keys  # noqa: E402
from nets import anchor_fit, nets_factory  # noqa: E402
from utils import anchor_report  # noqa: E402
from bench import synthetic_records  # noqa: E402

flags.DEFINE_string('work_dir', '/tmp/anchor_fit_bench', 'Where the synthetic split is written (kept).')
flags.DEFINE_integer('num_records', 16000, 'Records in the synthetic split.')
flags.DEFINE_integer('repeats', 3, 'Timed runs of each step; the median is printed.')


def _voc_like_boxes(rng):
    """1-4 normalised yxyx boxes, sides log-normal around 0.3 of the image, inside it."""
    count = int(rng.integers(1, 5))
    side = np.clip(np.exp(rng.normal(np.log(0.3), 0.75, count)), 0.02, 1.0)
    aspect = np.exp(rng.normal(0, 0.5, count))
    h, w = np.minimum(side / np.sqrt(aspect), 1), np.minimum(side * np.sqrt(aspect), 1)
    cy, cx = rng.uniform(h / 2, 1 - h / 2), rng.uniform(w / 2, 1 - w / 2)
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)


def _box_features(rng):
    """Features of 1-4 VOC-like boxes, each labelled 1."""
    boxes = _voc_like_boxes(rng)
    feature = {keys.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[1] * len(boxes)))}
    for column, key in enumerate(keys.BOX_KEYS.values()):
        feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=boxes[:, column]))
    return feature


def _median_seconds(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(flag_values):
    directory = os.path.join(flag_values.work_dir, str(flag_values.num_records))
    if os.path.isfile(os.path.join(directory, dataset_info.INFO_FILENAME)):
        paths = dataset_info.list_shards(directory, 'train')
    else:
        synthetic_records.write_split(directory, flag_values.num_records, extra_features=_box_features)
        paths = dataset_info.list_shards(directory, 'train')
    megabytes = sum(os.path.getsize(path) for path in paths) / 1e6
    read_s, (boxes, records, _) = _median_seconds(
        lambda: split_boxes.split_boxes(paths, flag_values.num_records), flag_values.repeats)
    params = nets_factory.get_network('ssd_300_vgg', 2).params
    rows = [(f'read the boxes back (split_boxes: {records} records, {megabytes:.0f} MB, {len(boxes)} boxes)', read_s)]
    for name, function in (
            ('BPR of SSD300\'s built-in anchors (anchor_fit.anchor_fit)',
             lambda: anchor_fit.anchor_fit(boxes, params, 0.5)),
            ('--anchor_sizes=auto for SSD300 (anchor_report.fitted_sizes)',
             lambda: anchor_report.fitted_sizes(boxes, params, 0.5)),
            ('the report with a warning\'s four options (anchor_report.options)',
             lambda: anchor_report.options(boxes, 'ssd_300_vgg', params, 0.5, False))):
        rows.append((name, _median_seconds(function, flag_values.repeats)[0]))
    print(f'| step (median of --repeats={flag_values.repeats}) | seconds |\n|---|---|')
    for name, seconds in rows:
        print(f'| {name} | {seconds:.2f} |')
    fit = anchor_fit.anchor_fit(boxes, params, 0.5)
    print(f'BPR {fit.bpr:.3f}, median best IoU {fit.median_iou:.2f}; auto sizes '
          f'{anchor_report.sizes_text(anchor_report.fitted_sizes(boxes, params, 0.5))}')


if __name__ == '__main__':
    script_setup.run_main(main, flags.FLAGS)
