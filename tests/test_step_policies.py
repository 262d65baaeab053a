"""The step policies alone, on a fake clock: the log line with its progress and time left, the expected
duration, the run's totals, and the end-of-run summary; and the chief's event writer as TensorBoard reads it."""
import dataclasses
import logging as py_logging
import time

import pytest
import tensorflow.compat.v1 as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorflow.core.framework.summary_pb2 import Summary
from tensorflow.core.util.event_pb2 import SessionLog

from utils import step_policies, train_plan
from utils.step_policies import SpeedLog

LOSSES = {'total': 5.0, 'cross_entropy_pos': 1.0, 'cross_entropy_neg': 2.0, 'localization': 1.5,
          'regularization': 0.5}


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def logged(caplog):
    return [record.getMessage() for record in caplog.records]


def test_loss_jump_warns_once_when_the_loss_exceeds_a_hundred_times_the_first(caplog):
    caplog.set_level(py_logging.WARNING)
    watch = step_policies.LossJumpWatch()
    for step, loss in ((5, 20.0), (6, 1999.0), (7, 2001.0), (8, 5e8), (9, 30.0)):   # 1999 = 99.95 x 20
        watch.record(step, loss)
    assert logged(caplog) == [
        "step 7: loss 2001, 100 times step 5's 20: the updates are too large for these weights. If the loss does not "
        "come back down within a few steps, stop and start again from an earlier checkpoint or a new --train_dir "
        "with a lower --learning_rate (from scratch, --warmup_steps=50 ramps the rate up)"]


def test_format_losses():
    line = step_policies.format_losses(40, LOSSES, 0.001, 0.5, 32)
    assert line == ('step 40: loss 5.0000 (pos 1.0000 neg 2.0000 loc 1.5000 reg 0.5000) lr 0.001 | '
                    '0.500 sec/step, 64.0 images/s')


@pytest.mark.parametrize('secs, text', [(40, '40 s'), (89.4, '89 s'), (90, '2 min'), (720, '12 min'),
                                        (5399, '90 min'), (5400, '1.5 h'), (9000, '2.5 h')])
def test_format_duration(secs, text):
    assert step_policies.format_duration(secs) == text


def test_format_progress():
    assert step_policies.format_progress(1050, 3000, 0.4) == '35% of 3000, about 13 min left'   # 1950 x 0.4 s
    assert step_policies.format_progress(3000, 3000, 0.4) == '100% of 3000, about 0 s left'


def test_log_lines_give_progress_and_time_left_from_the_recent_rate(caplog):
    caplog.set_level(py_logging.INFO, logger='absl')
    clock = FakeClock()
    log = SpeedLog(every_n_steps=2, images_per_step=4, max_number_of_steps=10, clock=clock)
    log.cadence.start(0)                           # as TrainStep does with the global step it finds
    log.record(1, 5.0, LOSSES, 0.1)                # the first step (5 s of start-up) ends at t = 1000
    clock.now += 2
    log.record(2, 0.5, LOSSES, 0.1)                # 2 s since step 1: the rate, not the first step's 5 s
    step_2, = logged(caplog)                       # no expected duration yet: step 2 was still warming up
    assert step_2.startswith('step 2: loss 5.0000 ') and step_2.endswith(
        '| 2.750 sec/step, 1.5 images/s | 20% of 10, about 16 s left')            # 8 steps x 2 s
    for step in (3, 4):
        clock.now += 1
        log.record(step, 0.5, LOSSES, 0.1, note='1 bad sample(s) skipped')
    step_4, duration = logged(caplog)[1:]
    assert step_4 == (step_policies.format_losses(4, LOSSES, 0.1, 0.5, 4)
                      + ' | 40% of 10, about 6 s left | 1 bad sample(s) skipped')     # 1 s a step now
    assert duration.startswith('Expected duration of this run: about 15 s (10 steps from step 0, at 1.000 s a step '
                               'from now on), ending about ')                     # 9 s so far + 6 s
    assert duration.endswith(time.strftime('%H:%M', time.localtime(995 + 15)))
    assert log.totals() == ('This process ran 4 step(s), from global step 0 to 4, in 9 s (1.8 images/s); final loss '
                            '5.0000 (pos 1.0000 neg 2.0000 loc 1.5000 reg 0.5000) lr 0.1.')   # 16 images / 9 s


def test_without_a_step_limit_the_line_has_no_progress(caplog):
    caplog.set_level(py_logging.INFO, logger='absl')
    log = SpeedLog(every_n_steps=1, images_per_step=4, clock=FakeClock())
    log.cadence.start(7)
    log.record(8, 0.5, LOSSES, 0.1)
    assert logged(caplog) == [step_policies.format_losses(8, LOSSES, 0.1, 0.5, 4)]
    assert log.totals().startswith('This process ran 1 step(s), from global step 7 to 8, ')


def test_the_first_line_of_a_process_without_a_window_uses_its_sec_per_step(caplog):
    caplog.set_level(py_logging.INFO, logger='absl')
    clock = FakeClock()
    log = SpeedLog(every_n_steps=1, images_per_step=4, max_number_of_steps=100, clock=clock)
    log.cadence.start(50)                          # a resumed run
    log.record(51, 3.0, LOSSES, 0.1)
    assert logged(caplog) == [step_policies.format_losses(51, LOSSES, 0.1, 3.0, 4)
                              + ' | 51% of 100, about 2 min left']                # 49 steps x 3 s
    clock.now += 1.5
    log.record(52, 1.5, LOSSES, 0.1)               # the second step, still warming up: no duration yet
    clock.now += 0.5
    log.record(53, 0.5, LOSSES, 0.1)               # measured after the warm-up: 0.5 s a step
    assert len(logged(caplog)) == 4 and logged(caplog)[2].endswith('| 53% of 100, about 24 s left')
    assert 'about 28 s (50 steps from step 50, at 0.500 s a step from now on)' in logged(caplog)[3]   # 5 s + 47 x 0.5


def test_slow_steps_get_a_first_line_a_minute_after_the_warm_up_not_at_step_10(caplog):
    caplog.set_level(py_logging.INFO, logger='absl')
    clock = FakeClock()
    log = SpeedLog(every_n_steps=10, images_per_step=32, max_number_of_steps=1000, clock=clock)
    log.cadence.start(0)
    for step in range(1, 11):                      # 30 s a step, as full width at batch 32 on 2 cores
        clock.now += 30
        log.record(step, 30.0, LOSSES, 0.1)
    lines = logged(caplog)
    # Steps 1-2 warm up; step 3 ends 90 s in (over 60 s): its line and the duration; then step 10 as before.
    assert lines[0].startswith('step 3: loss ') and '| 0% of 1000, about 8.3 h left' in lines[0]   # 997 x 30 s
    assert lines[1].startswith('Expected duration of this run: about 8.3 h (1000 steps from step 0, at '
                               '30.000 s a step from now on)')   # 90 s + 997 x 30 s
    assert len(lines) == 3 and lines[2].startswith('step 10: loss ')
    quiet = SpeedLog(every_n_steps=0, images_per_step=32, max_number_of_steps=1000, clock=clock)
    for step in range(1, 6):                       # --log_every_n_steps=0: no line at all
        clock.now += 30
        quiet.record(step, 30.0, LOSSES, 0.1)
    assert len(logged(caplog)) == 3


def test_run_summary_says_how_it_ended_the_totals_and_the_next_commands_once():
    config = _config('./ckpt/fine_tuning', './IMAGE/tfrecords')
    totals = 'This process ran 3 step(s), from global step 0 to 3, in 9 s (1.3 images/s); final loss 1.0 () lr 0.1.'
    text = train_plan.run_summary(config, totals, 3, 'ckpt/fine_tuning/model.ckpt-3')
    assert text.splitlines() == [
        f'Training done at step 3, checkpoint ckpt/fine_tuning/model.ckpt-3. {totals}',
        'Evaluate it: python eval_ssd_network.py --dataset_dir=./IMAGE/tfrecords --checkpoint_path=./ckpt/fine_tuning',
        "Draw its detections: python detect.py --checkpoint_path=./ckpt/fine_tuning "
        "--images='path/to/your/photos/*.jpg' --output_dir=out"]
    stopped = train_plan.run_summary(config, totals, 3, 'ckpt/fine_tuning/model.ckpt-3', 'SIGINT')
    assert stopped.startswith('Stopped by SIGINT at step 3, checkpoint ckpt/fine_tuning/model.ckpt-3; run the same '
                              f'command to resume. {totals}\nEvaluate it: ')
    assert train_plan.run_summary(config, totals, 5, None) == f'Training done at step 5. {totals}'   # not the chief
    assert (train_plan.run_summary(config, totals, 5, None, train_plan.STOPPED_WITH_THE_CHIEF)
            == f'Stopped with the chief (worker 0) at global step 5. {totals}')
    no_test = train_plan.run_summary(config, totals, 3, 'ckpt/fine_tuning/model.ckpt-3', has_test_split=False)
    assert no_test.splitlines()[1] == (
        "Evaluate it: python eval_ssd_network.py --dataset_dir=./IMAGE/tfrecords --checkpoint_path=./ckpt/fine_tuning "
        "once ./IMAGE/tfrecords has a 'test' split (tf_convert_data.py --validation_fraction=0.2 holds a fifth of "
        "the images out)")


def test_draw_command_names_the_images_beside_the_records_quoted_for_the_shell(tmp_path):
    images = tmp_path / 'shop' / 'JPEGImages'
    images.mkdir(parents=True)
    config = _config('ckpt/shop', str(tmp_path / 'shop' / 'tfrecords'))
    for name in ('a.jpg', 'b.JPG', 'c.png', 'notes.txt'):
        (images / name).write_bytes(b'')
    _, draw = train_plan.next_commands(config)
    assert draw == (f"python detect.py --checkpoint_path=ckpt/shop --images='{images}/*.JPG,{images}/*.jpg,"
                    f"{images}/*.png' --output_dir=out")
    for index in range(30):                                   # a big folder: a few images, not all of them
        (images / f'{index:03d}.jpg').write_bytes(b'')
    assert train_plan.next_commands(config)[1] == (
        f"python detect.py --checkpoint_path=ckpt/shop --images={images}/000.jpg,{images}/001.jpg,{images}/002.jpg "
        f"--output_dir=out")


def test_draw_command_without_images_beside_the_records_names_a_placeholder(tmp_path):
    (tmp_path / 'shop' / 'JPEGImages').mkdir(parents=True)     # empty, and no IMAGE/JPEGImages in the cwd
    _, draw = train_plan.next_commands(_config('ckpt/shop', str(tmp_path / 'shop' / 'tfrecords')))
    assert draw == "python detect.py --checkpoint_path=ckpt/shop --images='path/to/your/photos/*.jpg' --output_dir=out"


def test_evaluate_command_names_the_class_list_of_records_without_dataset_info(tmp_path):
    """SSD-Tensorflow's records have no dataset_info.json: training needed --dataset_name, so does eval."""
    config = _config('ckpt/voc', str(tmp_path))
    config = dataclasses.replace(config, input=dataclasses.replace(config.input, dataset_name='pascalvoc_2007'))
    evaluate, _ = train_plan.next_commands(config)
    assert evaluate == f'python eval_ssd_network.py --dataset_dir={tmp_path} --checkpoint_path=ckpt/voc ' \
                       '--dataset_name=pascalvoc_2007'
    (tmp_path / 'dataset_info.json').write_text('{}')      # the project's own records: the json names the classes
    assert train_plan.next_commands(config)[0].endswith('--checkpoint_path=ckpt/voc')


def _config(train_dir, dataset_dir):
    """A TrainConfig with the fields run_summary reads (the others are not looked at)."""
    from utils.train_tools import LoopConfig
    return train_plan.TrainConfig(
        model=None, fit_anchor_sizes=False, input=train_plan.InputConfig(dataset_dir), loss=None, schedule=None,
        num_epochs_per_decay_given=False, optimizer=None, moving_average_decay=None, trainable_scopes=None,
        restore=None, pretrained_optional=True, loop=LoopConfig(train_dir), devices=None, cluster=None)


def _scalar_steps_tensorboard_shows(logdir, tag):
    accumulator = event_accumulator.EventAccumulator(logdir)   # purges orphaned data, as TensorBoard does
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


@pytest.mark.parametrize('writer_class, shown', [(step_policies.ResumingEventWriter, [1, 5, 6]),
                                                 (tf.summary.FileWriter, [1, 6])])
def test_a_resumed_run_keeps_the_stopped_runs_last_point_and_drops_what_followed_its_checkpoint(
        tmp_path, writer_class, shown):
    """A run wrote points at steps 1, 5 (with its last checkpoint) and 8, then died; the resumed run restores step
    5 and logs START there, as slim's supervisor does. TensorBoard drops step 8 either way; the plain FileWriter
    (the reference case) also drops step 5."""
    def point(writer, step):
        writer.add_summary(Summary(value=[Summary.Value(tag='losses/total', simple_value=float(step))]), step)
    with tf.Graph().as_default():
        first = writer_class(str(tmp_path), filename_suffix='.1')
        first.add_session_log(SessionLog(status=SessionLog.START), 0)
        for step in (1, 5, 8):
            point(first, step)
        first.close()
        resumed = writer_class(str(tmp_path), filename_suffix='.2')
        resumed.add_session_log(SessionLog(status=SessionLog.START), 5)
        point(resumed, 6)
        resumed.close()
    assert _scalar_steps_tensorboard_shows(str(tmp_path), 'losses/total') == shown
