"""Damaged records as users meet them (issue 14): a damaged shard stops training and evaluation at start-up
with one line naming it, an undecodable sample is skipped and counted (and too many stop the run), a shard
damaged mid-run leaves a checkpoint to resume from, and detect.py goes on past an unreadable file."""
import functools
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

from datasets import tfrecord_pipeline
from tests import inference_fixtures
from tests.train_fixtures import ROOT, SMALL, make_tiny_dataset, train_in_process

TRAIN_SHARD, TEST_SHARD = 'demo_train_000.tfrecord', 'demo_test_000.tfrecord'
BAD_INDEX = 2


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    return make_tiny_dataset(str(tmp_path_factory.mktemp('data')))


@pytest.fixture
def records(pristine, tmp_path):
    """A fresh copy of the tiny dataset (8 train, 2 test records) to damage."""
    return shutil.copytree(pristine, str(tmp_path / 'records'))


def read_records(path):
    return list(tf.io.tf_record_iterator(path))


def write_records(path, records):
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def truncate(path):
    with open(path, 'rb') as source:
        data = source.read()
    with open(path, 'wb') as target:
        target.write(data[:len(data) * 2 // 3])


def flip_byte(path):
    first = len(read_records(path)[0])
    with open(path, 'r+b') as shard:
        shard.seek(12 + first + 4 + 12 + 100)       # inside record 1's data
        value = shard.read(1)[0]
        shard.seek(-1, os.SEEK_CUR)
        shard.write(bytes([value ^ 0x20]))


def drop_last(path):
    write_records(path, read_records(path)[:-1])


def spoil_image(path, index=BAD_INDEX):
    """Record `index` keeps its boxes, its image bytes become undecodable."""
    records = read_records(path)
    example = tf.train.Example.FromString(records[index])
    example.features.feature['image/encoded'].bytes_list.value[0] = b'\xff\xd8\xff\xe0 not a JPEG any more'
    records[index] = example.SerializeToString()
    write_records(path, records)


def train_command(records, train_dir, *args):
    pretrained = os.path.join(os.path.dirname(train_dir), 'pre')
    os.makedirs(pretrained, exist_ok=True)
    return [sys.executable, os.path.join(ROOT, 'train_ssd_network.py'), f'--dataset_dir={records}',
            f'--train_dir={train_dir}', f'--pretrained_path={pretrained}', '--log_every_n_steps=1',
            '--save_interval_secs=0'] + SMALL + list(args)


def run(command, timeout=300):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def error_line(result, program):
    """The run's one error line; no traceback."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f'{program}: error: ')]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0][len(f'{program}: error: '):]


@pytest.mark.parametrize('damage, problem', [
    (truncate, r'truncated at record \d+ \(\d+ of its \d+ bytes present\)'),
    (flip_byte, r'CRC mismatch at record 1'),
    (drop_last, r"split '(train|test)' count differs from dataset_info.json: \d vs \d records")])
def test_damaged_shard_stops_training_and_evaluation_before_the_graph(records, tmp_path, damage, problem):
    for shard in (TRAIN_SHARD, TEST_SHARD):
        damage(os.path.join(records, shard))
    train_dir = str(tmp_path / 'train')
    line = error_line(run(train_command(records, train_dir, '--max_number_of_steps=2')), 'train_ssd_network.py')
    named = os.path.join(records, TRAIN_SHARD if damage is not drop_last else 'demo_train_*.tfrecord')
    assert re.fullmatch(rf'{re.escape(named)}: {problem}; rebuild it with the conversion that made it, e\.g\. '
                        rf'python tf_convert_data\.py --dataset_dir=<your VOC folder> '
                        rf'--output_dir={re.escape(records)} --dataset_name=demo \(README section 2\)', line)
    assert not os.path.exists(train_dir) or not os.listdir(train_dir)   # no checkpoint, no model_config.json
    line = error_line(run([sys.executable, os.path.join(ROOT, 'eval_ssd_network.py'), f'--dataset_dir={records}',
                           f'--checkpoint_path={train_dir}']), 'eval_ssd_network.py')
    named = os.path.join(records, TEST_SHARD if damage is not drop_last else 'demo_test_*.tfrecord')
    assert re.match(rf'{re.escape(named)}: {problem}; rebuild it', line)


def test_check_records_flag_skips_the_check(records, tmp_path):
    truncate(os.path.join(records, TRAIN_SHARD))
    result = run(train_command(records, str(tmp_path / 'train'), '--max_number_of_steps=1', '--nocheck_records'))
    assert 'Records checked' not in result.stderr
    assert 'truncated at record' not in result.stderr   # reading fails later, in the pipeline, as before


def test_one_undecodable_image_is_skipped_and_counted_once_per_epoch(records, tmp_path, monkeypatch):
    spoil_image(os.path.join(records, TRAIN_SHARD))
    # A seeded, ordered pipeline: the one step below consumes the 7 good samples of epoch 1 and the first of
    # epoch 2, which with this seed does not follow the bad one, so it is passed over exactly once.
    monkeypatch.setattr(tfrecord_pipeline, 'PipelineConfig',
                        functools.partial(tfrecord_pipeline.PipelineConfig, seed=0, deterministic=True))
    step_fn = train_in_process([f'--dataset_dir={records}', f'--train_dir={tmp_path / "train"}',
                                f'--pretrained_path={tmp_path}', '--log_every_n_steps=1'] + SMALL +
                               ['--batch_size=8', '--max_number_of_steps=1', '--max_bad_sample_fraction=0.2'])
    assert [step for step, _ in step_fn.loss_history] == [1]
    assert step_fn.samples.summary() == '1 bad sample(s) skipped of 9 read'
    assert step_fn.samples.last_bad == f'{os.path.join(records, TRAIN_SHARD)} record {BAD_INDEX}: the image does ' \
                                       f'not decode'


def test_undecodable_image_trains_to_the_step_limit_and_is_reported(records, tmp_path):
    spoil_image(os.path.join(records, TRAIN_SHARD))
    train_dir = str(tmp_path / 'train')
    result = run(train_command(records, train_dir, '--max_number_of_steps=3', '--max_bad_sample_fraction=0.3'))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "Records checked: split 'train', 1 shard(s), 8 records" in log
    assert f'skipping a sample that cannot be decoded ({os.path.join(records, TRAIN_SHARD)} record {BAD_INDEX}: ' \
           f'the image does not decode); bad samples are counted' in log
    assert re.search(r'step 3: loss .* \| (\d+) bad sample\(s\) skipped of \d+ read', log)
    assert re.search(r'Training stops at global step 3; this process ran 3 step\(s\); [12] bad sample\(s\) skipped of '
                     r'1[23456] read', log)
    assert tf.train.latest_checkpoint(train_dir).endswith('model.ckpt-3')


def test_too_many_bad_samples_stop_the_run_with_a_checkpoint(records, tmp_path):
    spoil_image(os.path.join(records, TRAIN_SHARD))       # 1 of 8 is more than the default 1%
    train_dir = str(tmp_path / 'train')
    line = error_line(run(train_command(records, train_dir, '--max_number_of_steps=20')), 'train_ssd_network.py')
    # The one bad record counts once per epoch read: the read-ahead decides whether the stop comes after 1 or 2.
    found = re.fullmatch(rf'[12] of the \d+ samples read could not be decoded, more than 0.01 of them \(the last: '
                         rf'{re.escape(os.path.join(records, TRAIN_SHARD))} record {BAD_INDEX}: the image does not '
                         rf'decode\); repair or rebuild the records \(README section 2\) rather than train on what is '
                         rf'left; checkpoint saved at step (\d+): run the same command to resume', line)
    assert found and int(found.group(1)) <= 3, line
    assert tf.train.latest_checkpoint(train_dir).endswith(f'model.ckpt-{found.group(1)}')


def test_shard_damaged_while_training_leaves_a_checkpoint_to_resume_from(records, tmp_path):
    shard = os.path.join(records, TRAIN_SHARD)
    with open(shard, 'rb') as source:
        intact = source.read()
    train_dir = str(tmp_path / 'train')
    # Read every epoch: with the decoded images in memory, a shard damaged after the first epoch is not read again.
    process = subprocess.Popen(train_command(records, train_dir, '--cache_images=never'), stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if re.search(r'\d\d:\d\d:\d\d step 2: loss ', line):
                with open(shard, 'r+b') as target:    # cut short under the running reader
                    target.truncate(len(intact) // 2)
                break
        _, rest = process.communicate(timeout=240)
    finally:
        process.kill()
    result = subprocess.CompletedProcess(process.args, process.returncode, '', ''.join(lines) + rest)
    line = error_line(result, 'train_ssd_network.py')
    # The record check, run on the failure, names the shard (TensorFlow's error does not).
    found = re.fullmatch(rf"step (\d+): reading the training records failed \(truncated record at \d+' failed with "
                         rf"Read less bytes than requested\); {re.escape(shard)}: truncated at record \d+ \(\d+ of "
                         rf"its \d+ bytes present\); rebuild it with the conversion that made it, .*\(README section "
                         rf"2\); checkpoint saved at step (\d+): run the same command to resume", line)
    assert found and found.group(1) == found.group(2), line
    reached = int(found.group(1))
    assert tf.train.latest_checkpoint(train_dir).endswith(f'model.ckpt-{reached}')
    with open(shard, 'wb') as target:                     # the data fixed, the same command resumes
        target.write(intact)
    resumed = run(train_command(records, train_dir, '--cache_images=never', f'--max_number_of_steps={reached + 1}'))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(rf'Resuming from .*model.ckpt-{reached} at step {reached}', resumed.stderr)


def test_detect_skips_an_unreadable_file_and_draws_the_others(tmp_path):
    prefix = inference_fixtures.make_checkpoint(str(tmp_path / 'train'))
    good = tmp_path / 'good.png'
    good.write_bytes(inference_fixtures.encode(inference_fixtures.make_image(60, 80, 0), 'PNG'))
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8\xff\xe0 cut short')
    result = inference_fixtures.run_script(['detect.py', f'--checkpoint_path={prefix}', f'--images={broken},{good}',
                                            f'--output_dir={tmp_path / "out"}'])
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(rf'^{re.escape(str(broken))}: cannot read the image \(.*\); skipped$', result.stderr, re.M)
    assert os.listdir(tmp_path / 'out') == ['good.png']
    only_broken = inference_fixtures.run_script(['detect.py', f'--checkpoint_path={prefix}', f'--images={broken}',
                                                 f'--output_dir={tmp_path / "out2"}'])
    assert only_broken.returncode == 1
    assert only_broken.stderr.strip().splitlines()[-1].startswith(f'detect.py: error: {broken}: cannot read the image')


def test_eval_reports_skipped_images_and_counts_their_ground_truth(tmp_path):
    prefix = inference_fixtures.make_checkpoint(str(tmp_path / 'train'))
    data = tmp_path / 'data'
    inference_fixtures.make_tfrecords(str(data))
    shard = str(data / 'tiny_test_000.tfrecord')
    spoil_image(shard, index=0)                            # its boxes: bottle and can
    results_json = tmp_path / 'results.json'
    result = inference_fixtures.run_script(['eval_ssd_network.py', f'--dataset_dir={data}',
                                            f'--checkpoint_path={prefix}', '--batch_size=2',
                                            f'--results_json={results_json}'])
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r': 2 images in ', result.stdout)
    assert (f'1 test image(s) skipped: they cannot be decoded (the last: {shard} record 0: the image does not '
            f'decode); their ground truth, where it could be read, counts as missed') in result.stdout
    payload = json.loads(results_json.read_text())
    assert payload['num_images'] == 2 and payload['num_skipped'] == 1
    assert {name: entry['num_gt'] for name, entry in payload['per_class'].items()} == {'bottle': 3, 'can': 2, 'box': 0}
