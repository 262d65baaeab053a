"""Learning proof: train SSD from scratch on the demo dataset and report test mAP against training wall time.

    python bench/convergence.py --budget_minutes=30

Drives the two user-facing scripts, nothing else: train_ssd_network.py runs in segments (each a fresh
subprocess with a growing --max_number_of_steps, resuming from the work dir's checkpoint), and after each
segment eval_ssd_network.py evaluates the newest checkpoint on the test split (--results_json). Training
time is the sum of the training subprocesses' wall times, start-up and checkpoint saving included;
evaluation time is reported separately and not counted. A segment that would overrun the budget is
stopped with SIGTERM (the training script saves a checkpoint and exits; that time counts too).

The learning-rate schedule is fitted to the wall-clock budget: before each segment the remaining budget
is turned into steps at the speed measured so far, and the cosine (or polynomial) decay is set to end at
that step, so the rate reaches --end_learning_rate when the budget runs out even on a slower or busier
machine. The table goes to stdout and to <work_dir>/convergence.csv and convergence.json: per evaluation
the step, images seen, epochs, training minutes, the mean of the segment's last 10 logged training losses,
the schedule's end step, the mean 1-minute load average while that segment trained (the bench's own
training counts about 1-2 of it on 2 cores), and test mAP by the VOC2007 and VOC2010 rules.

Defaults (chosen by short runs on the 2-core machine, see bench/RESULTS.md): depth multiplier 0.125 (2.7x
the images/s of 0.25), batch 4 (more updates per image: at equal images seen, batch 4 > 8 > 16 by far),
Adam with epsilon 1e-8 (the training script's SSD-Tensorflow default of 1.0 barely moves), peak rate 2e-3
after a 50-step linear warm-up, cosine decay to 1e-5 at the end of the budget, weight decay 5e-4.
"""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

flags.DEFINE_float('budget_minutes', 30.0, 'Training wall-clock budget (eval time not counted).')
flags.DEFINE_float('segment_minutes', 3.0, 'Training time between two evaluations.')
flags.DEFINE_string('work_dir', os.path.join(tempfile.gettempdir(), 'ssd_convergence'),
                    'Demo data, checkpoints, logs and the results table go here.')
flags.DEFINE_string('dataset_dir', None, 'TFRecords to use instead of the demo data made in --work_dir.')
flags.DEFINE_boolean('restart', True, 'Delete the previous run\'s checkpoints in --work_dir/train first.')
flags.DEFINE_float('depth_multiplier', 0.125, 'Channel multiplier of the network.')
flags.DEFINE_integer('batch_size', 4, 'Images per step.')
flags.DEFINE_string('optimizer', 'adam', 'Optimizer (train_ssd_network.py --optimizer).')
flags.DEFINE_float('learning_rate', 2e-3, 'Peak learning rate (after the warm-up).')
flags.DEFINE_float('end_learning_rate', 1e-5, 'Rate at the end of the budget (cosine / polynomial).')
flags.DEFINE_string('learning_rate_decay_type', 'cosine',
                    'cosine or polynomial: fitted to the budget; other types take --train_flags.')
flags.DEFINE_float('opt_epsilon', 1e-8, 'Adam / RMSProp epsilon (the training script\'s default too; '
                   'SSD-Tensorflow\'s was 1.0).')
flags.DEFINE_integer('warmup_steps', 50, 'Linear warm-up steps.')
flags.DEFINE_float('weight_decay', 5e-4, 'L2 weight decay.')
flags.DEFINE_float('expected_sec_per_step', None,
                   'Speed guess (s/step, start-ups included) used until the first segment has measured it; '
                   'default 4.6 s x depth_multiplier x batch_size / 16 (this 2-core machine, idle).')
flags.DEFINE_float('target_map', 0.80, 'mAP (VOC07) the run is checked against.')
flags.DEFINE_multi_string('train_flags', [], 'Extra flags for train_ssd_network.py, e.g. --train_flags=--momentum=0.9.')
FLAGS = flags.FLAGS

STOP_SECS = 5.0  # what the training script needs after SIGTERM to save a checkpoint and exit
MIN_SEGMENT_SECS = 20.0  # a segment with less budget left would end during the training script's start-up
LOSS_RE = re.compile(r'step (\d+): loss ([0-9.eE+-]+)')
COLUMNS = ('segment', 'step', 'images_seen', 'epochs', 'train_minutes', 'loss', 'learning_rate_horizon', 'load',
           'map_voc07', 'map_voc2010', 'eval_seconds')


def _log(message):
    print(message, flush=True)


def _dataset_dir():
    if FLAGS.dataset_dir:
        return FLAGS.dataset_dir
    from datasets import demo_dataset
    image_dir = os.path.join(FLAGS.work_dir, 'IMAGE')
    return demo_dataset.ensure_demo_dataset(image_dir, os.path.join(image_dir, 'tfrecords'), _log)


def _run(command, log_path, deadline=None):
    """Runs command with its output appended to log_path -> (rc, wall seconds, output text, mean 1-minute
    load average while it ran). Past `deadline` (time.monotonic()) it gets SIGTERM, so the training script
    saves a checkpoint and exits."""
    start, loads = time.monotonic(), []
    with open(log_path, 'a') as log:
        log.write('\n$ ' + ' '.join(command) + '\n')
        log.flush()
        offset = log.tell()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        terminated = False
        while process.poll() is None:
            if deadline is not None and not terminated and time.monotonic() > deadline:
                process.send_signal(signal.SIGTERM)
                terminated = True
            loads.append(os.getloadavg()[0])
            time.sleep(0.5)
    wall = time.monotonic() - start
    with open(log_path) as log:
        log.seek(offset)
        return process.returncode, wall, log.read(), sum(loads) / max(1, len(loads))


def _train_command(dataset_dir, train_dir, pretrained_dir, max_steps, horizon, num_samples):
    command = [sys.executable, os.path.join(ROOT, 'train_ssd_network.py'), f'--dataset_dir={dataset_dir}',
               f'--train_dir={train_dir}', f'--pretrained_path={pretrained_dir}',
               f'--depth_multiplier={FLAGS.depth_multiplier}', f'--batch_size={FLAGS.batch_size}',
               f'--max_number_of_steps={max_steps}', '--log_every_n_steps=10', '--save_interval_secs=0',
               '--save_summaries_secs=0', f'--optimizer={FLAGS.optimizer}', f'--opt_epsilon={FLAGS.opt_epsilon}',
               f'--learning_rate={FLAGS.learning_rate}', f'--end_learning_rate={FLAGS.end_learning_rate}',
               f'--learning_rate_decay_type={FLAGS.learning_rate_decay_type}',
               f'--warmup_steps={FLAGS.warmup_steps}', f'--weight_decay={FLAGS.weight_decay}']
    if FLAGS.learning_rate_decay_type in ('cosine', 'polynomial'):
        # decay_steps = int(num_samples / batch_size * num_epochs_per_decay) = horizon.
        command.append(f'--num_epochs_per_decay={(horizon + 0.5) * FLAGS.batch_size / num_samples:.6f}')
    return command + list(FLAGS.train_flags)


def _checkpoint_step(train_dir):
    """Global step of the newest checkpoint named in train_dir/checkpoint (0 when none)."""
    try:
        with open(os.path.join(train_dir, 'checkpoint')) as f:
            match = re.search(r'^model_checkpoint_path: ".*-(\d+)"', f.read(), re.M)
    except FileNotFoundError:
        return 0
    return int(match.group(1)) if match else 0


def _evaluate(dataset_dir, train_dir, json_path, log_path):
    command = [sys.executable, os.path.join(ROOT, 'eval_ssd_network.py'), f'--dataset_dir={dataset_dir}',
               '--dataset_split_name=test', f'--checkpoint_path={train_dir}', f'--results_json={json_path}']
    rc, wall, output, _ = _run(command, log_path)
    if rc != 0:
        raise RuntimeError(f'evaluation failed (rc {rc}); see {log_path}:\n{output[-2000:]}')
    with open(json_path, encoding='utf-8') as f:   # class names in any script
        return json.load(f), wall


def _format_table(rows):
    header = (f'{"seg":>3} {"step":>6} {"images":>7} {"epochs":>6} {"train min":>9} {"loss":>7} '
              f'{"lr horizon":>10} {"load":>5} {"mAP07":>6} {"mAP10":>6} {"eval s":>6}')
    lines = [header, '-' * len(header)]
    for r in rows:
        loss = f'{r["loss"]:7.3f}' if r['loss'] is not None else f'{"-":>7}'
        lines.append(f'{r["segment"]:>3} {r["step"]:>6} {r["images_seen"]:>7} {r["epochs"]:>6.1f} '
                     f'{r["train_minutes"]:>9.2f} {loss} {r["learning_rate_horizon"]:>10} {r["load"]:>5.2f} '
                     f'{r["map_voc07"]:>6.3f} {r["map_voc2010"]:>6.3f} {r["eval_seconds"]:>6.1f}')
    return '\n'.join(lines)


def _write_results(rows, settings):
    with open(os.path.join(FLAGS.work_dir, 'convergence.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(FLAGS.work_dir, 'convergence.json'), 'w') as f:
        json.dump({'settings': settings, 'rows': rows}, f, indent=2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    train_dir = os.path.join(FLAGS.work_dir, 'train')
    pretrained_dir = os.path.join(FLAGS.work_dir, 'no_pretrained')  # empty: train from scratch
    if FLAGS.restart:
        shutil.rmtree(train_dir, ignore_errors=True)
        shutil.rmtree(os.path.join(FLAGS.work_dir, 'eval'), ignore_errors=True)
    os.makedirs(pretrained_dir, exist_ok=True)
    os.makedirs(os.path.join(FLAGS.work_dir, 'eval'), exist_ok=True)
    dataset_dir = _dataset_dir()
    with open(os.path.join(dataset_dir, 'dataset_info.json'), encoding='utf-8') as f:
        num_samples = json.load(f)['num_samples']['train']
    train_log, eval_log = (os.path.join(FLAGS.work_dir, name) for name in ('train_log.txt', 'eval_log.txt'))
    settings = {name: FLAGS[name].value for name in (
        'budget_minutes', 'segment_minutes', 'depth_multiplier', 'batch_size', 'optimizer', 'learning_rate',
        'end_learning_rate', 'learning_rate_decay_type', 'opt_epsilon', 'warmup_steps', 'weight_decay',
        'train_flags')}
    settings.update(dataset_dir=dataset_dir, num_train_images=num_samples, cpus=os.cpu_count())
    _log('Convergence bench: ' + ', '.join(f'{k}={v}' for k, v in settings.items()))
    _log(f'Training log: {train_log}; evaluation log: {eval_log}')

    budget, segment = FLAGS.budget_minutes * 60.0, FLAGS.segment_minutes * 60.0
    sec_per_step = FLAGS.expected_sec_per_step or 4.6 * FLAGS.depth_multiplier * FLAGS.batch_size / 16
    trained_secs, step, rows = 0.0, 0, []
    _log(_format_table([]))
    last = False
    while not last:
        remaining = budget - trained_secs
        if rows and remaining < MIN_SEGMENT_SECS:   # a segment overran into the last seconds of the budget
            _log(f'{remaining:.0f} s of budget left: too little for a segment, the run ends here')
            break
        horizon = step + max(1, int(remaining / sec_per_step))  # the step at which the budget should run out
        target = step + max(1, int(min(segment, remaining) / sec_per_step))
        last = remaining < 1.5 * segment  # a short tail would mostly be start-up: fold it into this segment
        if last:
            target = horizon
        command = _train_command(dataset_dir, train_dir, pretrained_dir, target, horizon, num_samples)
        # SIGTERM a few seconds early: saving the checkpoint and exiting take that long.
        rc, wall, output, load = _run(command, train_log, deadline=time.monotonic() + remaining - STOP_SECS)
        trained_secs += wall
        if rc != 0:
            raise RuntimeError(f'training failed (rc {rc}); see {train_log}:\n{output[-3000:]}')
        losses = LOSS_RE.findall(output)
        new_step = _checkpoint_step(train_dir)
        if new_step <= step:
            raise RuntimeError(f'training made no progress in {wall:.0f} s; see {train_log}')
        step = new_step
        sec_per_step = trained_secs / step  # the whole run's average: steadier than the last segment's
        results, eval_secs = _evaluate(dataset_dir, train_dir, os.path.join(FLAGS.work_dir, 'eval',
                                                                            f'step_{step}.json'), eval_log)
        rows.append({'segment': len(rows) + 1, 'step': step, 'images_seen': step * FLAGS.batch_size,
                     'epochs': round(step * FLAGS.batch_size / num_samples, 2),
                     'train_minutes': round(trained_secs / 60.0, 3),
                     'loss': round(sum(float(v) for _, v in losses[-10:]) / len(losses[-10:]), 4) if losses else None,
                     'learning_rate_horizon': horizon, 'load': round(load, 2),
                     'map_voc07': results['map_voc07'], 'map_voc2010': results['map_voc2010'],
                     'eval_seconds': round(eval_secs, 1)})
        _write_results(rows, settings)
        _log(_format_table(rows[-1:]).splitlines()[-1] + f'   ({sec_per_step:.2f} s/step so far, start-ups included)')
    _log('\nTest mAP against training wall time (' + ', '.join(f'{k}={v}' for k, v in settings.items()) + ')')
    _log(_format_table(rows))
    reached = [r for r in rows if r['map_voc07'] >= FLAGS.target_map]
    _log(f'Best mAP VOC07 {max(r["map_voc07"] for r in rows):.3f}, final {rows[-1]["map_voc07"]:.3f}; target '
         f'{FLAGS.target_map:.2f} ' + (f'first reached after {reached[0]["train_minutes"]:.1f} training minutes'
                                        if reached else 'not reached'))
    _log(f'Results in {os.path.join(FLAGS.work_dir, "convergence.csv")} and convergence.json')
    return 0


if __name__ == '__main__':
    app.run(main)
