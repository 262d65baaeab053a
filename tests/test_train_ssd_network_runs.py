"""train_ssd_network.py as users run it (subprocesses): a run writes checkpoints and TensorBoard events,
Ctrl-C saves a checkpoint at the step reached and exits 0, and the same command resumes from it."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow.compat.v1 as tf
from tensorboard.backend.event_processing import event_accumulator

from tests.inference_fixtures import assert_no_tensorflow_noise
from tests.train_fixtures import ROOT, SMALL, make_tiny_dataset
from utils import host

STEP_LINE = re.compile(r'\d\d:\d\d:\d\d step (\d+): loss ')


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    return make_tiny_dataset(str(root)), str(root / 'train'), str(root / 'pre')


def command(workspace, *args):
    records, train_dir, pretrained = workspace
    os.makedirs(pretrained, exist_ok=True)
    return [sys.executable, os.path.join(ROOT, 'train_ssd_network.py'), f'--dataset_dir={records}',
            f'--train_dir={train_dir}', f'--pretrained_path={pretrained}', '--log_every_n_steps=1'] + SMALL + list(args)


def run(workspace, *args):
    result = subprocess.run(command(workspace, *args), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def summary_tags(train_dir):
    tags = set()
    for path in glob.glob(os.path.join(train_dir, 'events.out.tfevents.*')):
        for event in tf.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def tensorboard_scalar_steps(train_dir, tag):
    """The steps of a scalar as TensorBoard (README section 4) reads the train_dir's events."""
    accumulator = event_accumulator.EventAccumulator(train_dir)
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def test_run_interrupt_and_resume(workspace):
    _, train_dir, _ = workspace
    # 1. A fresh run: start-up report, checkpoint at the last step, TensorBoard events, model config.
    log = run(workspace, '--max_number_of_steps=3')
    assert 'anchors in all: 8732' in log and 'samples per split: test 2, train 8' in log
    assert 'Starting from scratch' in log
    # Restarted with huge-page malloc where it applies (utils/host.py), before anything else ran.
    tunables = host.tunables_with_huge_page_malloc(os.environ, host.cpu_flags(), host.transparent_huge_page_mode(),
                                                   host.glibc_version())
    assert (f'memory: glibc malloc on transparent huge pages (GLIBC_TUNABLES={tunables}: ' in log if tunables
            else 'memory: glibc malloc on transparent' not in log)
    assert_no_tensorflow_noise(log)
    # Log lines are a time and the message; tf-slim's info lines ('Starting Session.', ...) are left out.
    assert re.search(r'^\d\d:\d\d:\d\d Starting from scratch', log, re.M)
    assert 'INFO:tensorflow' not in log and 'Starting Session' not in log and '.py:' not in log
    assert [int(s) for s in STEP_LINE.findall(log)] == [1, 2, 3]
    assert (re.findall(r'\d\d:\d\d:\d\d step \d+: .* images/s \| (\d+)% of 3, about \d+ s left', log)
            == ['33', '67', '100'])
    assert log.count('Expected duration of this run: about ') == 1
    # The end-of-run summary: the steps, the checkpoint, and the next commands once.
    records, _, _ = workspace
    assert re.search(r'Training done at step 3, checkpoint .*model.ckpt-3\. This process ran 3 step\(s\), from global '
                     r'step 0 to 3, in \d+ s \([0-9.]+ images/s\); final loss [0-9.]+ \(pos ', log)
    evaluate = f'Evaluate it: python eval_ssd_network.py --dataset_dir={records} --checkpoint_path={train_dir}'
    assert log.count(evaluate) == 1
    assert tf.train.latest_checkpoint(train_dir).endswith('model.ckpt-3')
    assert {'losses/total', 'losses/cross_entropy_pos', 'losses/cross_entropy_neg', 'losses/localization',
            'losses/regularization', 'learning_rate', 'inputs_with_boxes/image/0'} <= summary_tags(train_dir)
    assert tensorboard_scalar_steps(train_dir, 'losses/total') == [1, 3]   # the first step, then the last
    assert os.path.isfile(os.path.join(train_dir, 'model_config.json'))

    # 2. The same command without a step limit resumes; the first Ctrl-C saves at the step reached, exits 0.
    process = subprocess.Popen(command(workspace), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines, steps = [], []
    try:
        for line in process.stderr:
            lines.append(line)
            found = STEP_LINE.search(line)
            if found:
                steps.append(int(found.group(1)))
                if steps[-1] >= 6:
                    break
        signalled = time.time()
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    log = ''.join(lines) + rest
    assert process.returncode == 0, log[-3000:]
    assert time.time() - signalled < 30
    assert re.search(r'^\d\d:\d\d:\d\d warning: SIGINT received: saving a checkpoint', log, re.M)
    assert re.search(r'Resuming from .*model.ckpt-3 at step 3', log) and steps[0] == 4
    reached = max(int(s) for s in STEP_LINE.findall(log))
    assert tf.train.latest_checkpoint(train_dir).endswith(f'model.ckpt-{reached}')
    assert re.search(rf'Stopped by SIGINT at step {reached}, checkpoint .*model.ckpt-{reached}; run the same '
                     r'command to resume', log)

    # 3. Resuming continues from that step.
    log = run(workspace, f'--max_number_of_steps={reached + 2}')
    assert re.search(rf'Resuming from .*model.ckpt-{reached} at step {reached}', log)
    # Each run's report and flags stay in training_config.txt, the first run's (max steps 3) included.
    report = open(os.path.join(train_dir, 'training_config.txt')).read()
    assert report.count('# Run started ') == 3 and report.count('\n--max_number_of_steps=3\n') == 1
    assert [int(s) for s in STEP_LINE.findall(log)] == [reached + 1, reached + 2]
    assert tf.train.latest_checkpoint(train_dir).endswith(f'model.ckpt-{reached + 2}')
    # TensorBoard keeps each run's first and last points, the stopped runs' last ones included.
    assert tensorboard_scalar_steps(train_dir, 'losses/total') == [1, 3, 4, reached, reached + 1, reached + 2]
