"""This project and torchvision's ssd300_vgg16 side by side: training and end-to-end inference speed.

    python -m bench.train_throughput [--rounds 3] [--torch_python /tmp/tv/bin/python] [--baseline_dir DIR]

Each measurement runs in its own process, alternated with the others round by round, so that the 2
shared cores' load falls on every program alike; the table gives the median of the rounds and each
process's peak RSS.
- ours, training: train_ssd_network.py itself (the real step: input pipeline, clones, loss, Adam update,
  summaries) on the demo records, from scratch, --log_every_n_steps=1; images/s from the logged
  sec/step of the steps after the first `--warmup_steps` (their trimmed mean, bench/training_runs.py).
- ours, inference: image tensor in, detections out (resize, network, decoding, per-class NMS), batch 1
  and --batch_size, from the SavedModel deployment/export_serving_model.py writes of that training's
  checkpoint (signature serving_uint8, as TF Serving runs it) and from detect.py's in-process model.
- torchvision (when --torch_python imports torchvision; not a project dependency): ssd300_vgg16(weights=None,
  weights_backbone=None, num_classes=21), 2 threads; training: SGD on random boxes; inference: eval mode,
  its own transform and NMS.
- --baseline_dir: a checkout of another revision (e.g. `git worktree add /tmp/base <commit>`), whose
  train_ssd_network.py is timed in the same rounds.
GFLOP/s count 2 FLOPs per multiply-add of every convolution (bench/network.py's analytic count from the
graph's shapes), each program at its own class count: ours trains on the demo's 4 classes + background
(61.2 GFLOP forward, 183 forward+backward per image at depth 1.0, conv6 as one dilated convolution),
torchvision's has 21 (62.7 and 188, our network's count at 21 classes), so the images/s ratio favours ours by
2.5% of the work and the GFLOP/s ratio is the like-for-like one; the
matmul peak is measured in this run (bench/network.py), before and after. torchvision is only timed at
depth 1.0, the only width it has.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

from bench.training_runs import ROOT, ensure_demo_records, run_child, time_training
from datasets.demo_drawing import CLASS_NAMES

CHILD = os.path.join(ROOT, 'bench', 'throughput_child.py')
OUR_NUM_CLASSES = len(CLASS_NAMES) + 1   # the demo records ours trains on, background included
TORCH_NUM_CLASSES = 21                   # throughput_child's torchvision model (VOC's 20 + background)

flags.DEFINE_integer('rounds', 3, 'Rounds of alternated measurements (the table shows medians).')
flags.DEFINE_integer('batch_size', 8, 'Training batch, and the larger inference batch.')
flags.DEFINE_float('depth_multiplier', 1.0, 'Width of our network (torchvision has only 1.0).')
flags.DEFINE_integer('train_steps', 8, 'Training steps per measurement, warm-up included.')
flags.DEFINE_integer('warmup_steps', 3, 'Steps not timed at the start of each training run.')
flags.DEFINE_integer('inference_iterations', 5, 'Timed inference runs per batch size (after one warm-up).')
flags.DEFINE_string('torch_python', sys.executable, 'Python with torch + torchvision (skipped if absent).')
flags.DEFINE_string('baseline_dir', None, 'Checkout of another revision to time in the same rounds.')
flags.DEFINE_string('work_dir', None, 'Where demo records, checkpoints and exports go (default: a temp dir).')
flags.DEFINE_bool('inference', True, 'Also time inference (of the first training run\'s checkpoint).')
flags.DEFINE_bool('training', True, 'Time training (--notraining: inference only, of --checkpoint_dir).')
flags.DEFINE_string('checkpoint_dir', None, 'A train_dir of this project to time inference with, instead of a '
                    'checkpoint trained here (its depth multiplier must be --depth_multiplier).')
FLAGS = flags.FLAGS


def _time_training(repo_dir, dataset_dir, work_dir):
    """time_training at this run's flags."""
    return time_training(repo_dir, dataset_dir, work_dir, FLAGS.depth_multiplier, FLAGS.batch_size,
                         FLAGS.train_steps, FLAGS.warmup_steps)


def export_saved_model(checkpoint_dir, work_dir):
    output_dir = tempfile.mkdtemp(prefix='export-', dir=work_dir)
    run_child(['deployment/export_serving_model.py', f'--checkpoint_path={checkpoint_dir}',
               f'--output_dir={output_dir}', '--model_version=1'])
    return os.path.join(output_dir, '1')


def _median_row(samples):
    """{key: median over rounds} of a list of dicts with numeric values."""
    return {key: statistics.median(s[key] for s in samples) for key in samples[0]}


def measure(work_dir, with_torch):
    """{program: {measure: value}} medians over the rounds, plus 'peak' (matmul GFLOP/s)."""
    dataset_dir = ensure_demo_records(work_dir)
    samples, saved_model, checkpoint_dir = {}, None, FLAGS.checkpoint_dir

    def add(program, **values):
        samples.setdefault(program, []).append(values)
    peaks = [run_child([CHILD, 'matmul'])[0]['gflops']]
    gflop = {family: run_child([CHILD, 'flops', str(FLAGS.depth_multiplier), str(num_classes)])[0]
             for family, num_classes in (('ours', OUR_NUM_CLASSES), ('torch', TORCH_NUM_CLASSES))}
    for _ in range(FLAGS.rounds):
        if FLAGS.training:
            train_dir = time_training_round(dataset_dir, work_dir, with_torch, add)
            if checkpoint_dir:
                shutil.rmtree(train_dir)
            checkpoint_dir = checkpoint_dir or train_dir   # the first run's checkpoint is the one exported
        if not FLAGS.inference:
            continue
        saved_model = saved_model or export_saved_model(checkpoint_dir, work_dir)
        time_inference_round(saved_model, checkpoint_dir, with_torch, add)
    peaks.append(run_child([CHILD, 'matmul'])[0]['gflops'])
    table = {program: _median_row(rows) for program, rows in samples.items()}
    table['peak'] = {'before': peaks[0], 'after': peaks[1], 'gflops': max(peaks)}
    table['gflop_per_image'] = gflop
    table['training_rounds'] = {program: [row['images_per_s'] for row in rows]
                                for program, rows in samples.items() if program.endswith('_train')}
    return table


def time_training_round(dataset_dir, work_dir, with_torch, add):
    """One round of training measurements; returns our run's train_dir."""
    rate, rss, train_dir = _time_training(ROOT, dataset_dir, work_dir)
    add('ours_train', images_per_s=rate, rss_gib=rss)
    if FLAGS.baseline_dir:
        rate, rss, baseline_train_dir = _time_training(FLAGS.baseline_dir, dataset_dir, work_dir)
        shutil.rmtree(baseline_train_dir)
        add('baseline_train', images_per_s=rate, rss_gib=rss)
    if with_torch:
        result, rss = run_child([CHILD, 'torch_train', str(FLAGS.batch_size), str(FLAGS.train_steps),
                                 str(FLAGS.warmup_steps)], python=FLAGS.torch_python)[:2]
        add('torch_train', images_per_s=result['images_per_s'], rss_gib=rss)
    return train_dir


def time_inference_round(saved_model, checkpoint_dir, with_torch, add):
    for batch in (1, FLAGS.batch_size):
        common = [str(batch), str(FLAGS.inference_iterations)]
        for program, args, python in (
                ('ours_saved_model', [CHILD, 'saved_model', saved_model] + common, sys.executable),
                ('ours_detect', [CHILD, 'detect_model', checkpoint_dir] + common, sys.executable),
                ('torch_infer', [CHILD, 'torch_infer'] + common, FLAGS.torch_python)):
            if program.startswith('torch') and not with_torch:
                continue
            result, rss = run_child(args, python=python)[:2]
            add(f'{program}_b{batch}', images_per_s=result['images_per_s'], rss_gib=rss)


def print_table(table):
    peak = table['peak']['gflops']
    gflop_per_image = table['gflop_per_image']
    print(f'SSD300-VGG16 depth {FLAGS.depth_multiplier:g}, ours {OUR_NUM_CLASSES} classes (demo), torchvision '
          f'{TORCH_NUM_CLASSES}; {os.cpu_count()} CPU cores; medians of '
          f'{FLAGS.rounds} alternated rounds; matmul peak {peak:.1f} GFLOP/s (before {table["peak"]["before"]:.1f}, '
          f'after {table["peak"]["after"]:.1f})')
    print('| measure | program | images/s | GFLOP/s | fraction of peak | peak RSS GiB | x torchvision | x baseline |')
    print('|---|---|---|---|---|---|---|---|')
    # (measure, pass of the GFLOP count, programs, torchvision's row, the baseline's row)
    rows = [(f'training, batch {FLAGS.batch_size}', 'train',
             ('ours_train', 'baseline_train', 'torch_train'), 'torch_train', 'baseline_train')]
    rows += [(f'inference end to end, batch {b}', 'forward',
              (f'ours_saved_model_b{b}', f'ours_detect_b{b}', f'torch_infer_b{b}'), f'torch_infer_b{b}', None)
             for b in (1, FLAGS.batch_size)]
    for title, pass_name, keys, torch_key, baseline_key in rows:
        reference = {'torch': table.get(torch_key, {}).get('images_per_s'),
                     'baseline': table.get(baseline_key, {}).get('images_per_s')}
        for key in keys:
            if key not in table:
                continue
            rate, rss = table[key]['images_per_s'], table[key]['rss_gib']
            gflop = gflop_per_image['torch' if key.startswith('torch') else 'ours'][pass_name]
            ratios = [f'{rate / reference[name]:.2f}' if reference[name] and not key.startswith(name) else ''
                      for name in ('torch', 'baseline')]
            print(f'| {title} | {key} | {rate:.3f} | {rate * gflop:.1f} | {rate * gflop / peak:.2f} | {rss:.2f} | '
                  + ' | '.join(ratios) + ' |')
    rounds = table['training_rounds']
    for program, rates in rounds.items():
        print(f'{program}, images/s round by round: ' + ', '.join(f'{rate:.2f}' for rate in rates))
    if 'baseline_train' in rounds:
        ratios = [ours / base for ours, base in zip(rounds['ours_train'], rounds['baseline_train'])]
        print('ours / baseline round by round: ' + ', '.join(f'{ratio:.3f}' for ratio in ratios)
              + f' (median {statistics.median(ratios):.3f})')


def torch_available():
    try:
        return subprocess.run([FLAGS.torch_python, '-c', 'import torchvision'], capture_output=True).returncode == 0
    except OSError:   # no such program
        return False


def main(_):
    if not FLAGS.training and FLAGS.inference and not FLAGS.checkpoint_dir:
        raise app.UsageError('--notraining times inference only: pass --checkpoint_dir')
    importable = torch_available()
    with_torch = FLAGS.depth_multiplier == 1.0 and importable
    if not with_torch:
        print(f'torchvision not timed (it imports in {FLAGS.torch_python}: {importable}; it has depth 1.0 only)')
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix='ssd-throughput-')
    print_table(measure(work_dir, with_torch))


if __name__ == '__main__':
    app.run(main)
