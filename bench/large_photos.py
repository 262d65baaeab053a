"""Training on large photos: records of 12 MP photos kept as they are against stored downscaled.

    python -m bench.large_photos [--rounds 3] [--depth_multiplier 0.125 --batch_size 4] [--work_dir DIR]

A phone's photo is 4032x3024 pixels and about 3 MB of JPEG; training decodes each image at every step.
The bench makes such photos from the demo images (each resized to 4032x3024, bicubic, with Gaussian noise
of sigma 6 per channel so that it compresses like a photo, JPEG quality 90; the boxes scaled alike),
converts them twice, with --max_short_side=0 (kept) and at its default (downscaled), and prints, per set:
the records' size, the input pipeline's CPU per image (bench/input_pipeline.py, one parallel call), and
train_ssd_network.py's images/s (bench/training_runs.py's timing), alternated round by round.
"""
import os
import re
import statistics
import sys
import tempfile

from absl import app, flags
import numpy as np
from PIL import Image

from bench.training_runs import ROOT, ensure_demo_records, run_child, time_training
from datasets.voc_to_tfrecords import DEFAULT_MAX_SHORT_SIDE, ConversionOptions, convert_voc_dataset

flags.DEFINE_integer('rounds', 3, 'Rounds of alternated measurements (the table shows medians).')
flags.DEFINE_integer('num_photos', 60, 'Photos made from the first demo images.')
flags.DEFINE_float('depth_multiplier', 0.125, 'Width of the network trained.')
flags.DEFINE_integer('batch_size', 4, 'Training batch.')
flags.DEFINE_integer('train_steps', 60, 'Training steps per measurement, warm-up included.')
flags.DEFINE_integer('warmup_steps', 10, 'Steps not timed at the start of each training run.')
flags.DEFINE_string('work_dir', None, 'Where the demo, the photos, their records and checkpoints go '
                    '(default: a temp dir).')
FLAGS = flags.FLAGS

PHOTO_SIZE = (4032, 3024)   # width, height: a phone's 12 MP photo
_BOX_TAG = re.compile(r'<(xmin|xmax|ymin|ymax)>([\d.]+)</\1>')
_PIPELINE_ROW = re.compile(r'^\| decode \+ augment \+ encode \|.*\| ([\d.]+) \|$', re.MULTILINE)


def make_photos(demo_dir, photo_dir, count, seed=0):
    """photo_dir/{Annotations, JPEGImages}: the first `count` demo samples at PHOTO_SIZE."""
    rng = np.random.default_rng(seed)
    for sub in ('Annotations', 'JPEGImages'):
        os.makedirs(os.path.join(photo_dir, sub), exist_ok=True)
    stems = sorted(name[:-4] for name in os.listdir(os.path.join(demo_dir, 'Annotations'))
                   if name.endswith('.xml'))[:count]
    width, height = PHOTO_SIZE
    for stem in stems:
        with Image.open(os.path.join(demo_dir, 'JPEGImages', stem + '.jpg')) as image:
            scale_x, scale_y = width / image.width, height / image.height
            pixels = np.asarray(image.convert('RGB').resize(PHOTO_SIZE, Image.BICUBIC), dtype=np.float32)
        noisy = np.clip(pixels + rng.normal(0., 6., pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(os.path.join(photo_dir, 'JPEGImages', stem + '.jpg'), quality=90)
        with open(os.path.join(demo_dir, 'Annotations', stem + '.xml')) as source:
            xml = source.read()
        xml = _BOX_TAG.sub(lambda m: '<{0}>{1:.0f}</{0}>'.format(
            m.group(1), float(m.group(2)) * (scale_x if m.group(1)[0] == 'x' else scale_y)), xml)
        xml = re.sub(r'<width>\d+</width>', f'<width>{width}</width>', xml)
        xml = re.sub(r'<height>\d+</height>', f'<height>{height}</height>', xml)
        with open(os.path.join(photo_dir, 'Annotations', stem + '.xml'), 'w') as out:
            out.write(xml)


def folder_megabytes(path):
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path)) / 2 ** 20


def pipeline_ms_per_image(records):
    """CPU milliseconds per image of the training input pipeline (decode, augment, encode)."""
    _, _, output = run_child([os.path.join(ROOT, 'bench', 'input_pipeline.py'), f'--dataset_dir={records}',
                              '--num_images=200', '--batch_size=4', '--num_parallel_calls=1'])
    match = _PIPELINE_ROW.search(output)
    if not match:
        raise RuntimeError(f'no pipeline row in bench/input_pipeline.py\'s output:\n{output[-3000:]}')
    return 1000. / float(match.group(1))


def main(_):
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix='large-photos-')
    ensure_demo_records(work_dir)   # generates the demo images in work_dir/images
    photo_dir = os.path.join(work_dir, 'photos')
    if not os.path.isdir(photo_dir):
        make_photos(os.path.join(work_dir, 'images'), photo_dir, FLAGS.num_photos)
    sets = {'kept (--max_short_side=0)': 0, f'downscaled (--max_short_side={DEFAULT_MAX_SHORT_SIDE})':
            DEFAULT_MAX_SHORT_SIDE}
    records = {}
    for name, max_short_side in sets.items():
        records[name] = os.path.join(work_dir, f'records-{max_short_side}')
        convert_voc_dataset(photo_dir, records[name], ConversionOptions(dataset_name='photos',
                                                                        max_short_side=max_short_side),
                            log_fn=lambda line: None)
    samples = {name: {'pipeline': [], 'training': []} for name in sets}
    for round_index in range(FLAGS.rounds):
        for name in sets:
            samples[name]['pipeline'].append(pipeline_ms_per_image(records[name]))
            rate, _, _ = time_training(ROOT, records[name], work_dir, FLAGS.depth_multiplier, FLAGS.batch_size,
                                       FLAGS.train_steps, FLAGS.warmup_steps)
            samples[name]['training'].append(rate)
            print(f'round {round_index + 1}: {name}: pipeline {samples[name]["pipeline"][-1]:.1f} ms CPU an '
                  f'image, training {rate:.2f} images/s', file=sys.stderr)
    print(f'{FLAGS.num_photos} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}; training at depth '
          f'{FLAGS.depth_multiplier:g}, batch {FLAGS.batch_size}; medians of {FLAGS.rounds} alternated rounds')
    print('| records | MiB | pipeline, ms CPU an image | training images/s |')
    print('|---|---|---|---|')
    for name in sets:
        print(f'| {name} | {folder_megabytes(records[name]):.0f} | '
              f'{statistics.median(samples[name]["pipeline"]):.1f} | '
              f'{statistics.median(samples[name]["training"]):.2f} |')


if __name__ == '__main__':
    app.run(main)
