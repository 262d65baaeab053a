"""train_ssd_network.py in-process: flag checks before any graph, the demo data and the Quick start, learning on demo
images, fine-tuning from a checkpoint with excluded scopes, refused runs that leave train_dir alone, and
the NaN stop. Plus one subprocess run to show the script prints a bad flag as one line."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

import train_ssd_network as script
from datasets import dataset_info, demo_dataset, demo_drawing
from nets import nets_factory
from tests.train_fixtures import ROOT, SMALL, make_tiny_dataset, parse_flags, plan_from_flags
from tests.train_fixtures import train_in_process as run_steps
from utils import learning_schedules as ls
from utils import devices, host, startup_report, step_policies, train_plan
from utils.errors import UserError


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    return make_tiny_dataset(str(tmp_path_factory.mktemp('data')))


def check(records, tmp_path, *args):
    base = [f'--dataset_dir={records}', f'--train_dir={tmp_path / "train"}', f'--pretrained_path={tmp_path}'] + SMALL
    return plan_from_flags(parse_flags(base + list(args)))


def test_defaults_are_the_course_settings():
    fv = parse_flags([])
    assert (fv.batch_size, fv.weight_decay, fv.optimizer, fv.learning_rate, fv.end_learning_rate, fv.model_name,
            fv.train_dir, fv.pretrained_path, fv.dataset_dir) == (
        32, 0.0005, 'adam', 0.001, 0.0001, 'ssd_300_vgg', './ckpt/fine_tuning', './ckpt/pre_trained',
        './IMAGE/tfrecords')
    assert parse_flags(['--checkpoint_path=/x/ssd_300_vgg.ckpt']).pretrained_path == '/x/ssd_300_vgg.ckpt'
    # Adam's epsilon is 1e-8, not SSD-Tensorflow's 1.0 (bench/RESULTS.md); --opt_epsilon=1.0 restores it.
    assert ls.describe_optimizer(script.config_from_flags(fv).optimizer) == (
        'adam, adam_beta1=0.9, adam_beta2=0.999, opt_epsilon=1e-08')
    assert script.config_from_flags(parse_flags(['--opt_epsilon=1.0'])).optimizer.opt_epsilon == 1.0


@pytest.mark.parametrize('batch_size, cores, towers', [(4, 2, 2), (8, 4, 4), (6, 4, 1), (4, 1, 1)])
def test_cpu_towers_need_a_batch_that_splits_over_the_cores(batch_size, cores, towers):
    assert devices.cpu_towers(batch_size, cores) == towers


AVX2, AVX512 = {'avx', 'avx2', 'fma'}, {'avx', 'avx2', 'fma', 'avx512f'}


@pytest.mark.parametrize('cpu, args, clones, single_threaded', [
    (AVX2, [], 2, True),                                # the Quick start's width on an AVX2 CPU: two towers
    (AVX512, [], 2, True),                              # and with AVX-512
    (AVX2, ['--num_clones=1'], 1, False),               # the user's choice stands
    (AVX2, ['--depth_multiplier=0.5'], 1, False),       # wide layers: one clone on both cores
    (AVX512, ['--depth_multiplier=0.5'], 1, False),
    (AVX2, ['--batch_size=3'], 1, False),               # 3 images do not split over 2 cores
    ({'sse2'}, [], 1, False),                           # not measured without AVX2
])
def test_a_narrow_network_trains_on_single_threaded_towers(records, tmp_path, monkeypatch, cpu, args, clones,
                                                          single_threaded):
    monkeypatch.setattr(devices, 'cpu_flags', lambda *_: cpu)
    monkeypatch.setattr(host, 'cpu_flags', lambda *_: cpu)
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    plan = check(records, tmp_path, *args)
    assert (plan.config.devices.num_clones, len(plan.deployment.clone_devices), plan.single_threaded_ops) == (
        clones, clones, single_threaded)
    config = devices.session_config(cpu_devices=plan.deployment.cpu_devices, single_threaded_ops=single_threaded)
    assert config.intra_op_parallelism_threads == (1 if single_threaded else 0)
    assert ('one thread per op' in startup_report.training_report(plan)) == single_threaded
    # The wide layers' weight gradients go through NCHW on AVX2 CPUs without AVX-512 only.
    assert bool(plan.nchw_weight_gradient_layers) == (cpu == AVX2 and '--depth_multiplier=0.5' in args)
    # conv1's 8 channels go on column pairs with AVX-512 only, and the report says so.
    paired = cpu == AVX512 and '--depth_multiplier=0.5' not in args
    assert plan.paired_column_layers == (('ssd_300_vgg/conv1/conv1_1', 'ssd_300_vgg/conv1/conv1_2') if paired else ())
    assert ('conv1_1 and conv1_2 on column pairs' in startup_report.training_report(plan)) == paired


@pytest.mark.parametrize('mode, decoded, available, cached, words', [
    ('auto', 140e6, 24e9, True, 'kept in memory after the first epoch (140 MB decoded, within a quarter of the '
                                '24.00 GB available; --cache_images=never to read them every epoch)'),
    ('auto', 6e9, 24e9, True, 'kept in memory after the first epoch (6.00 GB decoded'),    # a quarter exactly
    ('auto', 6e9 + 1, 24e9, False, 'read and decoded every epoch (6.00 GB decoded, more than a quarter of the '
                                   '24.00 GB available; --cache_images=always keeps them in memory)'),
    ('auto', None, 24e9, False, 'read and decoded every epoch (the records do not give their images\' sizes'),
    ('auto', 140e6, None, False, 'read and decoded every epoch (the memory available is unknown'),
    ('always', 7e9, 24e9, True, 'kept in memory after the first epoch (--cache_images=always; 7.00 GB decoded)'),
    ('always', None, None, True, 'kept in memory after the first epoch (--cache_images=always; size unknown)'),
    ('never', 140e6, 24e9, False, 'read and decoded every epoch (--cache_images=never; 140 MB decoded)'),
])
def test_decoded_images_stay_in_memory_when_they_fit(mode, decoded, available, cached, words):
    decoded = None if decoded is None else int(decoded)
    cache, line = train_plan.image_cache(mode, decoded, available)
    assert cache == cached and line.startswith('decoded images: ') and words in line


def test_the_report_says_whether_the_decoded_images_stay_in_memory(records, tmp_path):
    small = check(records, tmp_path)                        # 8 records of at most 456x422: a few MB
    assert small.cache_decoded and 'decoded images: kept in memory after the first epoch' in \
        startup_report.training_report(small)
    refused = check(records, tmp_path, '--cache_images=never')
    assert not refused.cache_decoded and 'decoded images: read and decoded every epoch (--cache_images=never' in \
        startup_report.training_report(refused)
    starved = train_plan.fit_to_split(small, available_bytes=1000)     # a quarter of that holds no image
    assert not starved.cache_decoded and starved.cache_line.startswith('decoded images: read and decoded every')


def test_valid_flags_resolve_the_plan(records, tmp_path):
    plan = check(records, tmp_path, '--num_clones=2')
    assert plan.num_samples == 8 and plan.net.num_classes == 5 and plan.decay_steps == 4
    assert plan.restore.pretrained is None and plan.restore.resume_from is None and plan.model.data_format == 'NHWC'
    assert plan.deployment.clone_devices == ['/device:CPU:0', '/device:CPU:1']
    assert plan.model.class_names == ('none', 'bag', 'bottle', 'box', 'can')
    offset = check(records, tmp_path, '--labels_offset=1', '--dataset_name=demo')
    assert offset.model.class_names == ('none', 'bottle', 'box', 'can')
    assert offset.model.labels_offset == 1 and offset.net.num_classes == 4


@pytest.mark.parametrize('args, ignore_difficult', [([], True), (['--noignore_difficult'], False)])
def test_ignore_difficult_flag_reaches_the_target_encoder(records, tmp_path, monkeypatch, args, ignore_difficult):
    fv = parse_flags([f'--dataset_dir={records}', f'--train_dir={tmp_path / "train"}',
                      f'--pretrained_path={tmp_path}', '--match_threshold=0.6'] + SMALL + args)
    plan = plan_from_flags(fv)
    calls = []
    real_encoder = plan.net.target_encoder
    monkeypatch.setattr(plan.net, 'target_encoder', lambda **kwargs: calls.append(kwargs) or real_encoder(**kwargs))
    with tf.Graph().as_default():
        script.input_batch(plan)
    assert calls == [{'match_threshold': 0.6, 'ignore_difficult': ignore_difficult}]


@pytest.mark.parametrize('args, message', [
    (['--optimizer=adamw'], '--optimizer=adamw: unknown; use one of adadelta, adagrad, adam, ftrl, momentum, rmsprop'),
    (['--dataset_dir=/no/such/records'], '--dataset_dir=/no/such/records: no such directory'),
    (['--batch_size=5', '--num_clones=2'], '--batch_size=5 is not divisible by --num_clones=2'),
    (['--pretrained_path=/no/such.ckpt'], '--pretrained_path=/no/such.ckpt: no such checkpoint or directory'),
    (['--model_name=ssd_7'], '--model_name=ssd_7: unknown; use one of ssd_300_vgg, ssd_512_vgg'),
    (['--learning_rate_decay_type=step'], '--learning_rate_decay_type=step: unknown'),
    (['--num_classes=21'], r'--num_classes=21: the dataset in .* has 5'),
    (['--train_image_size=512'], '--train_image_size=512: ssd_300_vgg takes 300x300 inputs'),
    (['--data_format=NCHW'], '--data_format=NCHW: needs a GPU'),
    (['--dataset_split_name=val'], r"split 'val' is not in dataset_info.json"),
    (['--labels_offset=4'], '--labels_offset=4: must leave at least one class'),
    (['--learning_rate_boundaries=10,x'], '--learning_rate_boundaries=10,x: not a list of numbers'),
    (['--learning_rate_values=0.1'], '--learning_rate_values: only used by --learning_rate_decay_type=piecewise, '
                                     'not exponential'),
    (['--dataset_name=pascalvoc_2012'], r"--dataset_name=pascalvoc_2012: .*records holds the dataset 'demo' "
                                        r"\(4 classes\); the flag only names a built-in class list"),
])
def test_bad_flag_is_one_clear_line(records, tmp_path, args, message):
    with pytest.raises(UserError, match=message) as raised:
        check(records, tmp_path, *args)
    assert '\n' not in str(raised.value)


def test_train_dir_behind_a_file_is_one_line_before_anything_is_written(records, tmp_path):
    taken = tmp_path / 'taken'
    taken.write_text('x')
    with pytest.raises(UserError, match=f'^--train_dir={taken}/run: {taken} is a file, not a folder$'):
        check(records, tmp_path, f'--train_dir={taken}/run')
    assert taken.read_text() == 'x'


def test_dataset_folders_without_records(records, tmp_path):
    no_json = tmp_path / 'empty'
    no_json.mkdir()
    with pytest.raises(UserError, match=r"dataset_info.json: not found; convert the images with tf_convert_data.py "
                                        r"\(records of SSD-Tensorflow's VOC converter: pass --dataset_name="
                                        r"pascalvoc_2007 or pascalvoc_2012\)$"):
        check(str(no_json), tmp_path)
    info_only = tmp_path / 'info_only'
    info_only.mkdir()
    (info_only / 'dataset_info.json').write_text((open(os.path.join(records, 'dataset_info.json')).read()))
    with pytest.raises(UserError, match=r"info_only: no TFRecord shards for split 'train'"):
        check(str(info_only), tmp_path)


def test_dataset_name_may_name_the_builtin_list_of_a_voc_folder(records, tmp_path):
    voc = tmp_path / 'voc'
    voc.mkdir()
    for name in os.listdir(records):
        if name.endswith('.tfrecord'):
            os.symlink(os.path.join(records, name), voc / name)
    info = dataset_info.load_dataset_info(records)
    dataset_info.write_dataset_info(str(voc), dataset_info.DatasetInfo(
        'demo', ['none'] + list(dataset_info.VOC_CLASSES), info.num_samples, {}))
    assert check(str(voc), tmp_path, '--dataset_name=pascalvoc_2012').net.num_classes == 21
    assert check(str(voc), tmp_path, '--dataset_name=pascalvoc').net.num_classes == 21


def test_ssd_tensorflow_records_count_the_records_they_hold_not_the_builtin_split_size(records, tmp_path):
    """SSD-Tensorflow's record folders have no dataset_info.json: the built-in VOC2007 train size is 5011, but
    a folder of VOC2007's train list alone, or of a subset, holds fewer; the epochs count what is there."""
    legacy = tmp_path / 'legacy'
    legacy.mkdir()
    for name in os.listdir(records):
        if name.endswith('.tfrecord'):
            os.symlink(os.path.join(records, name), legacy / name.replace('demo_', 'voc_2007_'))
    plan = check(str(legacy), tmp_path, '--dataset_name=pascalvoc_2007')
    assert plan.info.num_samples == {'train': 8, 'test': 4952}   # the tiny dataset's 8 training records
    assert plan.decay_steps == 4        # int(8 samples / 4 images a step x 2 epochs)


def _save_checkpoint_5(train_dir):
    """A real (one-variable) train_dir/model.ckpt-5 and the state file naming it: resuming reads it back."""
    with tf.Graph().as_default():
        weight = tf.Variable(1.0, name='w')
        with tf.Session() as session:
            session.run(weight.initializer)
            tf.train.Saver().save(session, str(train_dir / 'model.ckpt'), global_step=5)


def test_resuming_does_not_look_at_pretrained_path(records, tmp_path):
    train_dir = tmp_path / 'train'
    _save_checkpoint_5(train_dir)
    plan = check(records, tmp_path, '--pretrained_path=/no/such.ckpt')
    assert plan.restore.resume_from == str(train_dir / 'model.ckpt-5') and plan.restore.pretrained is None


def test_train_more_on_a_finished_cosine_run_warns_that_the_rate_goes_back_up(records, tmp_path):
    """A run of 5 steps whose cosine ended at step 5, resumed with --max_number_of_steps=10: the cosine now spans
    10 steps, so at step 5 the rate is halfway down again, 0.0001 + (0.001 - 0.0001) / 2, not the end rate."""
    train_dir = tmp_path / 'train'
    _save_checkpoint_5(train_dir)
    cosine = ['--learning_rate_decay_type=cosine', '--warmup_steps=2']

    def report_after(*earlier_flags, now=('--max_number_of_steps=10',)):
        earlier = check(records, tmp_path, *cosine, *earlier_flags)
        startup_report.write_report(str(train_dir), 'report\n', earlier.config.flag_lines, 'earlier')
        return startup_report.training_report(check(records, tmp_path, *cosine, *now))
    assert ('warning: resuming at step 5 with --max_number_of_steps=10, where the run that saved the checkpoint '
            'had 5: the cosine now falls over 10 steps, so the rate at step 5 goes back up from 0.0001 to 0.00055, '
            'a restart of its fall that can raise the loss for a while; it reaches 0.0001 at step 10'
            ) in report_after('--max_number_of_steps=5')
    # Nothing to say: the same length (Ctrl-C, then the same command), a rate up by under a tenth of the way to
    # --learning_rate (at step 5 of 6, 0.067 of it: 1e-05 + 0.067 x 0.00099, 7 times the end rate but still
    # low), or a schedule the user changed too.
    assert 'warning: resuming' not in report_after('--max_number_of_steps=10')
    assert 'warning: resuming' not in report_after('--max_number_of_steps=5', '--end_learning_rate=1e-5',
                                                   now=('--max_number_of_steps=6', '--end_learning_rate=1e-5'))
    assert 'warning: resuming' not in report_after('--max_number_of_steps=5', '--learning_rate=0.01')
    # A checkpoint whose step cannot be told (no global_step, no -N in its name): nothing to compare.
    with tf.Graph().as_default():
        weight = tf.Variable(1.0, name='w')
        with tf.Session() as session:
            session.run(weight.initializer)
            tf.train.Saver().save(session, str(train_dir / 'model.ckpt'))
    assert 'warning: resuming' not in report_after('--max_number_of_steps=5')


def test_resuming_at_another_batch_size_warns_that_the_exponential_rate_jumps(records, tmp_path):
    """The tiny dataset's 8 training records, 2 epochs a decay: every 4 steps at batch 4, every 8 at batch 2. At
    step 5, with a factor of 0.5: 0.001 x 0.5 ** (5 // 4) = 0.0005 before, 0.001 x 0.5 ** (5 // 8) = 0.001 now."""
    train_dir = tmp_path / 'train'
    _save_checkpoint_5(train_dir)

    def report_after(earlier_flags, now_flags):
        earlier = check(records, tmp_path, *earlier_flags)
        startup_report.write_report(str(train_dir), startup_report.training_report(earlier),
                                    earlier.config.flag_lines, 'earlier')
        return startup_report.training_report(check(records, tmp_path, *now_flags))
    halving = ['--learning_rate_decay_factor=0.5']
    assert ('warning: resuming at step 5: --num_epochs_per_decay=2 now makes 8 decay steps, where the run that '
            'saved the checkpoint had 4 (another --batch_size, number of training samples or of synchronous '
            'replicas), so the exponential rate at step 5 jumps from 0.0005 to 0.001; --num_epochs_per_decay=1 '
            'keeps about the earlier 4') in report_after(halving + ['--batch_size=4'], halving + ['--batch_size=2'])
    # Nothing to say: the same batch size; a schedule the user changed too (3 epochs at batch 2: 12 steps, the
    # rate at step 5 0.001); an earlier cosine over its --max_number_of_steps, now over epochs (8 steps at batch 2).
    assert 'warning: resuming' not in report_after(halving + ['--batch_size=4'], halving + ['--batch_size=4'])
    assert 'warning: resuming' not in report_after(halving + ['--batch_size=4'],
                                                   halving + ['--batch_size=2', '--num_epochs_per_decay=3'])
    cosine = ['--learning_rate_decay_type=cosine', '--num_epochs_per_decay=2']
    earlier = check(records, tmp_path, '--learning_rate_decay_type=cosine', '--max_number_of_steps=6',
                    '--batch_size=4')
    startup_report.write_report(str(train_dir), startup_report.training_report(earlier), earlier.config.flag_lines,
                                'earlier')   # its --num_epochs_per_decay=2.0, defaulted, as now given
    assert 'warning: resuming' not in startup_report.training_report(
        check(records, tmp_path, *cosine, '--max_number_of_steps=6', '--batch_size=2'))


def test_train_more_compares_with_the_run_that_saved_the_checkpoint_not_a_later_one_killed_before_saving(
        records, tmp_path):
    """training_config.txt: a run of 5 steps (it saved model.ckpt-5), then one of 8 killed before its first save
    (its block written at its start, after the checkpoint): resuming with 10 compares with the 5."""
    train_dir = tmp_path / 'train'
    _save_checkpoint_5(train_dir)
    saved_at = os.path.getmtime(train_dir / 'model.ckpt-5.index')
    cosine = ['--learning_rate_decay_type=cosine', '--warmup_steps=2']
    for steps, started in ((5, saved_at - 120), (8, saved_at + 120)):
        flag_lines = check(records, tmp_path, *cosine, f'--max_number_of_steps={steps}').config.flag_lines
        startup_report.write_report(str(train_dir), 'report\n', flag_lines,
                                    time.strftime(startup_report.STARTED_FORMAT, time.localtime(started)))
    report = startup_report.training_report(check(records, tmp_path, *cosine, '--max_number_of_steps=10'))
    assert ('warning: resuming at step 5 with --max_number_of_steps=10, where the run that saved the checkpoint '
            'had 5:') in report


def test_a_training_config_written_in_a_legacy_encoding_does_not_stop_the_resume(records, tmp_path):
    """Before it was UTF-8, training_config.txt was written in the locale's encoding (Windows: cp1252, a path
    with 'é' as byte 0xe9): a resumed run reads it, appends its block and writes the whole file as UTF-8."""
    train_dir = tmp_path / 'train'
    _save_checkpoint_5(train_dir)
    (train_dir / startup_report.REPORT_FILENAME).write_bytes(
        '# Run started 2026-01-01 10:00:00\n# Flags\n--train_dir=C:\\Users\\José\\ckpt\n'.encode('cp1252'))
    plan = check(records, tmp_path, '--max_number_of_steps=10')
    startup_report.write_report(str(train_dir), startup_report.training_report(plan), plan.config.flag_lines,
                                'now')
    text = (train_dir / startup_report.REPORT_FILENAME).read_text(encoding='utf-8')
    assert text.startswith('# Run started 2026-01-01 10:00:00\n') and text.count('# Run started ') == 2
    assert 'José' in text   # kept, not replaced (read as Latin-1 under this UTF-8 locale, as cp1252 writes it)


def test_rerunning_a_finished_run_says_it_trains_no_step(records, tmp_path):
    _save_checkpoint_5(tmp_path / 'train')
    said = 'warning: the checkpoint resumed is at step 5, --max_number_of_steps=5: this run trains no step; a ' \
           'larger --max_number_of_steps trains on'
    assert said in startup_report.training_report(check(records, tmp_path, '--max_number_of_steps=5'))
    assert 'trains no step' not in startup_report.training_report(check(records, tmp_path, '--max_number_of_steps=6'))


def test_stale_train_dir_of_another_model_is_refused_early(records, tmp_path):
    train_dir = tmp_path / 'train'
    _save_checkpoint_5(train_dir)
    config = dict(check(records, tmp_path).model.to_json(), num_classes=21, class_names=['c'] * 21)
    (train_dir / 'model_config.json').write_text(json.dumps(config))
    with pytest.raises(UserError, match=r'its checkpoints are of another model \(num_classes: 21 -> 5\); use a new '
                                        r'--train_dir'):
        check(records, tmp_path)


def _small_demo(monkeypatch):
    small = demo_dataset.generate_demo_dataset
    monkeypatch.setattr(demo_dataset, 'generate_demo_dataset',
                        lambda out, seed=0, **_: small(out, seed, num_train=4, num_test=2, style=dataclasses.replace(
                            demo_drawing.STYLES['demo'], image_size=(96, 128))))


def test_demo_dataset_dir_makes_the_demo_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _small_demo(monkeypatch)
    said = []
    plan = plan_from_flags(parse_flags(SMALL + ['--dataset_dir=./demo/tfrecords']), log_fn=said.append)
    assert plan.config.input.dataset_dir == './demo/tfrecords' and plan.num_samples == 4
    assert said[0].startswith('demo holds no annotated images: generating the demo "commodity" dataset there')
    assert said[1] == './demo/tfrecords has no dataset_info.json: converting demo to TFRecords'
    assert dataset_info.load_dataset_info('demo/tfrecords').num_classes == 5


def test_default_dataset_dir_is_the_users_and_says_what_to_do_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo_dataset, 'generate_demo_dataset', lambda *args, **kwargs: pytest.fail('generated'))
    with pytest.raises(UserError, match=r'^--dataset_dir=./IMAGE/tfrecords: no such directory; convert your labelled '
                                        r'images into it first \(README section 2\), or try the demo: python '
                                        r'train_ssd_network.py --flagfile=configs/demo_cpu.flags$'):
        plan_from_flags(parse_flags(SMALL))
    assert os.listdir(tmp_path) == []


def _tree(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, dirs, files in os.walk(folder) for name in dirs + files)


def test_quick_start_leaves_the_users_folders_alone_and_the_default_run_then_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _small_demo(monkeypatch)
    shutil.copytree(os.path.join(ROOT, 'configs'), 'configs')
    for folder in ('IMAGE', 'ckpt/fine_tuning', 'ckpt/pre_trained'):
        os.makedirs(folder)
    (tmp_path / 'IMAGE' / 'README.md').write_text('your images go here')
    (tmp_path / 'ckpt' / 'pre_trained' / 'vgg_16.ckpt.index').write_text('not for the demo network')
    before = {folder: _tree(folder) for folder in ('IMAGE', 'ckpt/fine_tuning', 'ckpt/pre_trained')}
    quick_start = ['--flagfile=configs/demo_cpu.flags', '--max_number_of_steps=2', '--num_readers=1',
                   '--num_preprocessing_threads=2', '--save_interval_secs=0', '--log_every_n_steps=0']
    assert run_steps(quick_start).current_step == 2
    assert {folder: _tree(folder) for folder in before} == before
    assert tf.train.latest_checkpoint('ckpt/demo').endswith('model.ckpt-2') and os.path.isdir('demo/JPEGImages')
    os.remove('ckpt/pre_trained/vgg_16.ckpt.index')  # a real one would be fine-tuned from (not at SMALL's width)
    make_tiny_dataset(str(tmp_path / 'user'))                     # the user's own records, README section 2
    shutil.copytree(tmp_path / 'user' / 'records', 'IMAGE/tfrecords')
    default_run = SMALL + ['--max_number_of_steps=1', '--save_interval_secs=0', '--log_every_n_steps=0']
    assert run_steps(default_run).current_step == 1
    assert tf.train.latest_checkpoint('ckpt/fine_tuning').endswith('model.ckpt-1')
    evaluate, draw = train_plan.next_commands(plan_from_flags(parse_flags(quick_start)).config)
    assert evaluate == 'python eval_ssd_network.py --dataset_dir=./demo/tfrecords --checkpoint_path=./ckpt/demo'
    assert draw == ('python detect.py --checkpoint_path=./ckpt/demo --images=demo/JPEGImages/000300.jpg '
                    '--output_dir=out')


def train_in_process(records, tmp_path, *args):
    """The script's steps as main runs them (no signal handlers, no training thread)."""
    return run_steps([f'--dataset_dir={records}', f'--train_dir={tmp_path / "train"}', f'--pretrained_path={tmp_path}',
                      '--save_interval_secs=0', '--log_every_n_steps=0'] + SMALL + list(args))


@pytest.mark.parametrize('flag, message', [
    ('--trainable_scopes', 'matches no trainable variable'),
    ('--checkpoint_exclude_scopes', r'matches no model variable \(valid scopes: ssd_300_vgg/block10, '),
])
def test_a_run_refused_while_building_the_graph_leaves_train_dir_alone(records, tmp_path, flag, message):
    train_dir = tmp_path / 'train'
    train_dir.mkdir()
    previous = json.dumps({'written by': 'the previous run'})
    (train_dir / 'model_config.json').write_text(previous)
    with pytest.raises(UserError, match=f"{flag}: 'ssd_300_vgg/blok8' {message}"):
        train_in_process(records, tmp_path, f'{flag}=ssd_300_vgg/blok8')
    assert (train_dir / 'model_config.json').read_text() == previous
    assert sorted(os.listdir(train_dir)) == ['model_config.json']


def test_loss_falls_by_half_on_demo_images(records, tmp_path):
    """The last 5 steps' mean loss is under half the first step's, the loss of the initial weights (steps 2 and 3
    are after updates: in one CI run they had already fallen from 24.5 to 13.0 and 9.9, near the plateau)."""
    step_fn = train_in_process(records, tmp_path, '--max_number_of_steps=40', '--learning_rate_decay_type=fixed')
    losses = [loss for _, loss in step_fn.loss_history]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
    train_dir = tmp_path / 'train'
    assert tf.train.latest_checkpoint(str(train_dir)).endswith('model.ckpt-40')
    config = json.loads((train_dir / 'model_config.json').read_text())
    assert config['depth_multiplier'] == 0.125 and config['labels_offset'] == 0
    report = (train_dir / 'training_config.txt').read_text()
    assert 'anchors in all: 8732' in report
    assert 'kernels: oneDNN (TF_ENABLE_ONEDNN_OPTS=1), layout NHWC, conv6 as one dilated convolution' in report


def test_fine_tune_from_a_21_class_checkpoint_excluding_the_class_heads(records, tmp_path, caplog):
    """Exclude scopes, trainable scopes and moving averages (which start from the restored weights)."""
    net21 = nets_factory.get_network('ssd_300_vgg', 21, depth_multiplier=0.125)
    pretrained = str(tmp_path / 'pre' / 'ssd_300_vgg.ckpt')
    with tf.Graph().as_default():
        with slim.arg_scope(net21.arg_scope()):
            net21.build(tf.zeros([1, 300, 300, 3]))
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.train.Saver().save(session, pretrained, write_state=False)
    exclude = ','.join(f'{scope}/conv_cls' for scope in net21.box_head_scopes)
    caplog.set_level('INFO', logger='absl')
    train_in_process(records, tmp_path, f'--pretrained_path={pretrained}', '--max_number_of_steps=2',
                     '--optimizer=sgd', '--learning_rate=0.01', f'--checkpoint_exclude_scopes={exclude}',
                     f'--trainable_scopes={",".join(net21.box_head_scopes)}', '--moving_average_decay=0.5')
    assert any(re.search(r'Fine-tuning from .*ssd_300_vgg.ckpt: 59 variables restored, 12 excluded', r.getMessage())
               for r in caplog.records)
    trained = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / 'train')))
    frozen = 'ssd_300_vgg/conv1/conv1_1/weights'
    heads = [f'{scope}/conv_loc/weights' for scope in net21.box_head_scopes]
    before = {name: tf.train.load_variable(pretrained, name) for name in [frozen] + heads}
    np.testing.assert_array_equal(trained.get_tensor(frozen), before[frozen])       # not in --trainable_scopes
    # Trained: the loss moved the localisation heads of the feature maps the two augmented batches had positives
    # on, beyond the 1e-5 relative shrink of two steps of weight decay (a head with no positive gets only that).
    assert any(not np.allclose(trained.get_tensor(head), before[head], rtol=1e-4, atol=1e-7) for head in heads)
    np.testing.assert_allclose(trained.get_tensor(frozen + '/ExponentialMovingAverage'), before[frozen], rtol=1e-6)
    assert trained.get_tensor('ssd_300_vgg/block4_box/conv_cls/biases').shape == (20,)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(records, tmp_path):
    with pytest.raises(step_policies.TrainingDiverged, match=r'step (\d+): the loss is not finite') as raised:
        train_in_process(records, tmp_path, '--optimizer=sgd', '--learning_rate=1e12', '--save_every_n_steps=1',
                         '--learning_rate_decay_type=fixed', '--max_number_of_steps=50', '--weight_decay=0')
    failed_step = int(re.search(r'step (\d+)', str(raised.value)).group(1))
    latest = tf.train.latest_checkpoint(str(tmp_path / 'train'))
    assert latest is not None and latest.endswith(f'model.ckpt-{failed_step - 1}')
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        assert np.all(np.isfinite(reader.get_tensor(name))), name


def test_script_prints_a_bad_flag_as_one_line_before_building_anything(records, tmp_path):
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train_ssd_network.py'), '--optimizer=adamw',
                             f'--dataset_dir={records}', f'--train_dir={tmp_path}'],
                            capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'train_ssd_network.py: error: --optimizer=adamw: unknown; use one of adadelta, adagrad, adam, ftrl, '
        'momentum, rmsprop, sgd')
    assert 'Traceback' not in result.stderr and 'Start-up report' not in result.stderr
    assert not os.listdir(tmp_path) and time.time() - start < 60


def test_the_demo_cosine_ends_at_max_number_of_steps_unless_num_epochs_per_decay_is_given(records, tmp_path):
    demo = script.config_from_flags(parse_flags([f'--flagfile={ROOT}/configs/demo_cpu.flags']))
    assert not demo.num_epochs_per_decay_given and demo.loop.max_number_of_steps == 4500
    # The cosine over the whole run: 60 epochs of 300 images at batch 4.
    assert ls.decay_length(demo.schedule, 300, 4, 4500, False) == (ls.decay_steps_for(300, 4, 60),
                                                                   '= --max_number_of_steps')
    cosine = ['--learning_rate_decay_type=cosine', '--max_number_of_steps=30']
    plan = check(records, tmp_path, *cosine)
    assert (plan.decay_steps, plan.decay_source) == (30, '= --max_number_of_steps')
    report = startup_report.training_report(plan)
    assert 'schedule cosine: 0.001 -> 0.0001 over 30 steps (= --max_number_of_steps)' in report
    given = check(records, tmp_path, *cosine, '--num_epochs_per_decay=5')     # int(8 samples / 4 x 5 epochs)
    assert (given.decay_steps, given.decay_source) == (10, '--num_epochs_per_decay=5')
    assert 'warning: the learning rate is down to --end_learning_rate=0.0001 by step 10, as a decay period is ' \
           '10 step(s) (--num_epochs_per_decay=5)' in startup_report.training_report(given)
    assert 'warning: the learning rate' not in report                          # the cosine ends with the run
    # From scratch with Adam: the start-up report asks for a warm-up, until one is given.
    assert "warning: from scratch without a warm-up: Adam's first step" in report
    warm = startup_report.training_report(check(records, tmp_path, *cosine, '--warmup_steps=5'))
    assert 'warning:' not in warm
    in_file = tmp_path / 'schedule.flags'
    in_file.write_text('--num_epochs_per_decay=2\n')                          # a flag file's value is the user's too
    assert check(records, tmp_path, *cosine, f'--flagfile={in_file}').decay_steps == 4


def test_flagfile(tmp_path):
    flagfile = tmp_path / 'train.flags'
    flagfile.write_text('--batch_size=8\n--optimizer=momentum\n--checkpoint_path=/ckpt/vgg_16.ckpt\n')
    fv = parse_flags([f'--flagfile={flagfile}', '--batch_size=16'])
    assert (fv.batch_size, fv.optimizer, fv.pretrained_path) == (16, 'momentum', '/ckpt/vgg_16.ckpt')


def test_labels_offset_is_applied_before_the_augmentation(records, tmp_path):
    """With --labels_offset=3 only 'can' (record label 4) is trained: the augmented batch, its TensorBoard boxes
    and the anchor targets hold no box of a dropped class."""
    plan = check(records, tmp_path, '--labels_offset=3', '--batch_size=8')
    with tf.Graph().as_default():
        batch = script.input_batch(plan)
        with tf.Session() as session:
            values = session.run(batch)
    labels = values['gt_labels'][np.arange(values['gt_labels'].shape[1])[None, :] < values['num_boxes'][:, None]]
    assert labels.size and set(labels.tolist()) == {1}
    report = startup_report.training_report(plan)
    assert ("classes (5 with background): bag, bottle, box, can; trained with --labels_offset=3: can (the others' "
            "boxes are dropped)") in report
    record_labels = [label for path in dataset_info.list_shards(records, 'train') for record in
                     tf.io.tf_record_iterator(path) for label in tf.train.Example.FromString(record).features
                     .feature['image/object/bbox/label'].int64_list.value]
    assert f'anchor fit on {record_labels.count(4)} boxes of split ' in report      # only the cans' boxes


def test_a_cluster_worker_does_not_make_the_demo_data_but_waits_for_the_chief(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo_dataset, 'generate_demo_dataset', lambda *args, **kwargs: pytest.fail('generated'))
    args = SMALL + ['--dataset_dir=./demo/tfrecords', '--ps_hosts=p:1', '--worker_hosts=w:1,w:2', '--job_name=worker',
                    '--task=1', '--cluster_wait_secs=1']
    with pytest.raises(UserError, match=r'--dataset_dir=./demo/tfrecords: the chief \(worker 0\) has not made the '
                                        r'demo data after 1 s; start worker 0 first'):
        plan_from_flags(parse_flags(args))
    assert not os.path.exists('demo')
