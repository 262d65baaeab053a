"""The training step (NaN guard, stop requests, checkpoint cadence, logging) over a tiny graph, signal handling,
and checkpoints that survive a kill -9 during a save. The policies alone: tests/test_step_policies.py."""
import logging as py_logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from datasets.dataset_info import DatasetInfo, write_dataset_info
from utils import checkpoints, devices, step_policies, train_tools
from utils.errors import UserError
from utils.step_policies import TrainingDiverged
from utils.stop_request import StopRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeWriter:
    def __init__(self):
        self.steps, self.summaries = [], []

    def add_summary(self, summary, step):
        self.steps.append(step)
        self.summaries.append(summary)


class TinyTraining:
    """loss = sum(w^2) + poison, one SGD step per run; poison (not trained) can be set to NaN. Resource
    variables, so that the loss a step returns is always of the weights before its update (a ref variable's
    reads are unordered against the update, and the loss was sometimes of the updated weights)."""

    def __init__(self, tmp_path, max_number_of_steps=None, stop_request=None, save_interval_secs=600,
                 save_every_n_steps=0, save_summaries_secs=600, unreadable_input=False):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.global_step = tf.train.get_or_create_global_step()
            self.weights = tf.Variable([1.0, 2.0], name='w', use_resource=True)
            self.poison = tf.Variable(0.0, trainable=False, name='poison', use_resource=True)
            loss = tf.reduce_sum(tf.square(self.weights)) + self.poison
            if unreadable_input:   # a record file cut short: reading it fails as a damaged shard does
                shard = str(tmp_path / 'cut.tfrecord')
                with tf.io.TFRecordWriter(shard) as writer:
                    writer.write(b'a record' * 10)
                with open(shard, 'r+b') as cut:
                    cut.truncate(30)
                lengths = tf.data.TFRecordDataset(shard).map(lambda record: tf.strings.length(record))
                loss += tf.cast(tf.data.make_one_shot_iterator(lengths).get_next(), tf.float32)
            update = tf.train.GradientDescentOptimizer(0.1).minimize(loss, self.global_step)
            with tf.control_dependencies([update]):
                self.train_op = tf.identity(loss)
                step_after_update = tf.identity(self.global_step)
            self.saver = checkpoints.make_saver()
            self.clock = FakeClock()
            self.step_fn = train_tools.TrainStep(
                {'losses': {'total': loss, 'localization': loss * 0.0}, 'learning_rate': tf.constant(0.1),
                 'step': step_after_update},
                step_policies.StopPolicy(max_number_of_steps, stop_request),
                step_policies.SpeedLog(every_n_steps=2, images_per_step=4),
                step_policies.CheckpointPolicy(self.saver, str(tmp_path), train_tools.weights_finite_op([self.weights]),
                                               save_interval_secs, save_every_n_steps, clock=self.clock),
                step_policies.SummaryPolicy(tf.summary.scalar('loss', loss), save_summaries_secs, clock=self.clock))
            self.session = tf.Session()
            self.session.run(tf.global_variables_initializer())
        self.writer = FakeWriter()
        self.tmp_path = tmp_path

    def step(self):
        with self.graph.as_default():
            return self.step_fn(self.session, self.train_op, self.global_step, {'summary_writer': self.writer})

    def set(self, variable, value):
        with self.graph.as_default():
            self.session.run(variable.assign(value))

    def latest(self):
        return tf.train.latest_checkpoint(str(self.tmp_path))


def test_saves_on_interval_and_every_n_steps(tmp_path):
    run = TinyTraining(tmp_path, save_interval_secs=60, save_every_n_steps=3, save_summaries_secs=30)
    assert run.step() == (pytest.approx(5.0), False)           # step 1: loss of w = (1, 2)
    assert run.latest() is None and run.writer.steps == [1]    # summaries on the first step
    run.step()
    run.step()
    assert run.latest().endswith('model.ckpt-3')               # every 3 steps
    run.clock.now += 61
    run.step()
    assert run.latest().endswith('model.ckpt-4')               # 60 s passed
    assert run.writer.steps == [1, 4]                          # and 30 s for the summaries
    run.step()
    assert run.latest().endswith('model.ckpt-4')


def test_stops_at_max_steps_and_on_request(tmp_path):
    stop = StopRequest()
    run = TinyTraining(tmp_path, max_number_of_steps=3, stop_request=stop, save_interval_secs=0)
    assert [run.step()[1] for _ in range(3)] == [False, False, True]
    run = TinyTraining(tmp_path / 'b', max_number_of_steps=30, stop_request=stop, save_interval_secs=0)
    run.step()
    stop.signal_name = 'SIGINT'
    assert run.step()[1] is True and run.step_fn.current_step == 1   # no further step once asked to stop
    assert run.latest() is None                                       # slim.learning.train saves then


def test_a_read_failure_saves_then_says_what_the_record_check_finds(tmp_path):
    """The checkpoint is saved before the record check runs (minutes on a large split); the error then carries
    the check's line, or says that the shards read sound, or, the check failing otherwise, where to look."""
    def failure(check_records):
        train_dir = tmp_path / str(len(list(tmp_path.iterdir())))
        train_dir.mkdir()
        run = TinyTraining(train_dir, unreadable_input=True)
        saved_before_check = []
        run.step_fn.dataset_watch = step_policies.DatasetWatch(str(tmp_path / 'records'), ('none',), check_records and (
            lambda: (saved_before_check.append(run.latest()), check_records())))
        with pytest.raises(UserError) as failed:
            run.step()
        assert run.latest().endswith('model.ckpt-0')
        assert saved_before_check == ([run.latest()] if check_records else [])   # the check found it saved
        prefix = 'step 0: reading the training records failed ('
        message = str(failed.value)
        assert message.startswith(prefix) and message.endswith('; checkpoint saved at step 0: run the same command '
                                                               'to resume')
        return message[message.index('); ') + 3:-len('; checkpoint saved at step 0: run the same command to resume')]

    def damaged():
        raise UserError('records/shop_train_001.tfrecord: truncated at record 7')

    def vanished():
        raise FileNotFoundError('records/shop_train_001.tfrecord')
    assert failure(damaged) == 'records/shop_train_001.tfrecord: truncated at record 7'
    assert failure(lambda: None) == 'every shard reads sound now'
    assert failure(vanished) == 'the record check at start-up names a damaged shard'
    assert failure(None) == 'the record check at start-up names a damaged shard'     # --nocheck_records


def test_records_converted_again_with_another_class_stop_the_run_with_a_checkpoint(tmp_path):
    """A product added and the records converted into the folder the run reads: it stops at the next step,
    saved; more images of the same classes do not stop it."""
    records = tmp_path / 'records'

    def convert(class_names, train_samples):
        write_dataset_info(str(records), DatasetInfo('shop', class_names, {'train': train_samples}, {}))
    convert(['none', 'can', 'box'], 10)
    run = TinyTraining(tmp_path / 'train', save_interval_secs=0)
    run.step_fn.dataset_watch = step_policies.DatasetWatch(str(records), ('none', 'can', 'box'))
    run.step()
    convert(['none', 'can', 'box'], 12)
    run.step()
    convert(['none', 'can', 'box', 'jar'], 14)
    with pytest.raises(UserError) as stopped:
        run.step()
    assert str(stopped.value) == (
        f"step 3: {records / 'dataset_info.json'} changed since this run read it: the records now hold the classes "
        f"can, box, jar, not those it started with (can, box), and boxes of classes the network has no score for "
        f"would reach it as objects of no class; checkpoint saved at step 3: run the same command: it says how to "
        f"go on from it with these records")
    assert run.latest().endswith('model.ckpt-3')


def test_records_converted_again_while_the_images_are_cached_are_read_after_a_restart(tmp_path, caplog):
    """The same classes converted again: nothing stops; with the first epoch's images kept in memory, the run
    says once per conversion that a restart reads the new records."""
    caplog.set_level(py_logging.WARNING)
    records = tmp_path / 'records'
    for cached in (True, False):
        caplog.clear()
        write_dataset_info(str(records), DatasetInfo('shop', ['none', 'can', 'box'], {'train': 10}, {}))
        watch = step_policies.DatasetWatch(str(records), ('none', 'can', 'box'), images_cached=cached)
        assert watch.problem() is None                      # the first check: the baseline
        write_dataset_info(str(records), DatasetInfo('shop', ['none', 'can', 'box'], {'train': 12}, {}))
        assert watch.problem() is None and watch.problem() is None
        warnings = [record.getMessage() for record in caplog.records if record.levelno == py_logging.WARNING]
        assert warnings == ([f'{records / "dataset_info.json"} changed since this run read it (the same classes): '
                             'this run trains on the images it keeps in memory (see the start-up report\'s '
                             '"decoded images" line); to train on the new records, stop it with Ctrl-C and run '
                             'the same command'] if cached else [])


def test_records_converted_before_the_watch_starts_stop_the_first_step(tmp_path):
    """A conversion that ended between the run's reading of the class list and the first step (labels
    reordered) is caught at the first step, not taken as the baseline."""
    records = tmp_path / 'records'
    write_dataset_info(str(records), DatasetInfo('shop', ['none', 'box', 'can'], {'train': 10}, {}))
    run = TinyTraining(tmp_path / 'train', save_interval_secs=0)
    run.step_fn.dataset_watch = step_policies.DatasetWatch(str(records), ('none', 'can', 'box'))
    with pytest.raises(UserError, match=r"not those it started with \(can, box\), and the network would train its "
                                        "class scores on other classes' boxes; checkpoint saved at step 1"):
        run.step()


def test_the_last_steps_scalars_are_written_when_the_run_stops(tmp_path):
    """TensorBoard's curves reach the final step, from the values its log line fetched (no extra step)."""
    run = TinyTraining(tmp_path, max_number_of_steps=3, save_interval_secs=0)
    assert [run.step()[1] for _ in range(3)] == [False, False, True]
    assert run.writer.steps == [1, 3]
    # loss = |w|^2 before the step's update, w = (1, 2) x 0.8 per SGD step at rate 0.1: 5 x 0.64^2 at step 3.
    last = {value.tag: value.simple_value for value in run.writer.summaries[-1].value}
    assert last == pytest.approx({'losses/total': 5 * 0.64 ** 2, 'losses/localization': 0.0, 'learning_rate': 0.1})
    stop = StopRequest()
    run = TinyTraining(tmp_path / 'b', max_number_of_steps=30, stop_request=stop, save_interval_secs=0)
    run.step(), run.step()
    stop.signal_name = 'SIGINT'
    assert run.step()[1] is True and run.writer.steps == [1, 2]      # Ctrl-C: the step it stopped after
    run = TinyTraining(tmp_path / 'c', max_number_of_steps=1, save_interval_secs=0)
    assert run.step()[1] is True and run.writer.steps == [1]          # a step summarised once
    run = TinyTraining(tmp_path / 'd', max_number_of_steps=2, save_interval_secs=0, save_summaries_secs=0)
    run.step(), run.step()
    assert run.writer.steps == []                                     # --save_summaries_secs=0: none at all


class RaisedFlag:
    """A distributed.ClusterStop whose flag the chief has raised."""

    def requested(self, session):
        return True


def test_a_stop_by_the_cluster_flag_is_told_apart_from_the_processs_own():
    chief_stopped = step_policies.StopPolicy(10, StopRequest(), RaisedFlag())
    assert chief_stopped.should_stop(None, 3) and chief_stopped.stopped_with_the_chief
    at_limit = step_policies.StopPolicy(10, StopRequest(), RaisedFlag())
    assert at_limit.should_stop(None, 10) and not at_limit.stopped_with_the_chief


class VanishedCluster:
    """A distributed.ClusterStop whose parameter server is gone: reading its flag fails as TensorFlow's does."""

    def requested(self, session):
        raise tf.errors.UnavailableError(None, None, 'Socket closed')


def test_a_lost_task_found_by_any_session_call_of_the_step_is_reported(tmp_path):
    """Not only the train op: the cluster's stop flag, read around it, may be the first to find the ps gone
    (a CI run hung there: the StopRequest never heard of it and the session close waited on the dead ps)."""
    stop = StopRequest()
    run = TinyTraining(tmp_path, stop_request=stop)
    run.step_fn.stop = step_policies.StopPolicy(None, stop, VanishedCluster())
    with pytest.raises(tf.errors.UnavailableError):
        run.step()
    assert run.step_fn.current_step == 0                 # the flag's read, before the train op, failed
    error, _ = stop.lost_cluster
    assert error.message == 'Socket closed'


def test_nan_loss_stops_without_saving(tmp_path):
    run = TinyTraining(tmp_path, save_every_n_steps=1)
    run.step()
    run.set(run.poison, float('nan'))
    with pytest.raises(TrainingDiverged, match=r'step 2: the loss is not finite \(localization nan, total nan\).*'
                                               r'last checkpoint in .* is the last good one. Lower --learning_rate'):
        run.step()
    assert run.latest().endswith('model.ckpt-1')


def test_non_finite_weights_are_never_saved(tmp_path):
    run = TinyTraining(tmp_path, save_every_n_steps=1, max_number_of_steps=5)
    run.step()
    run.set(run.weights, [np.inf, 1.0])   # finite loss is impossible now, but check the save guard itself
    with pytest.raises(TrainingDiverged, match='the weights hold NaN or Inf'):
        run.step_fn.checkpoints.save(run.session, 7)
    assert run.latest().endswith('model.ckpt-1')


def test_logs_losses_speed_and_throughput(tmp_path, caplog):
    caplog.set_level(py_logging.INFO, logger='absl')
    run = TinyTraining(tmp_path, save_interval_secs=0)
    run.step()
    run.step()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('step ')]
    assert len(lines) == 1 and lines[0].startswith('step 2: loss 3.2000 (loc 0.0000) lr 0.1 | ')
    assert lines[0].endswith(' images/s') and 'sec/step' in lines[0]


def test_first_signal_sets_the_flag_and_a_copy_of_it_is_ignored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = StopRequest().install()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.signal_name == 'SIGTERM'
        os.kill(os.getpid(), signal.SIGINT)       # within SAME_REQUEST_SECS: the same request (GNU timeout's pair)
        time.sleep(0.05)
        assert stop.signal_name == 'SIGTERM' and signal.getsignal(signal.SIGINT) == stop._handle
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


WAITER = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {root!r})
    from utils.stop_request import StopRequest
    stop = StopRequest().install()
    def work():
        print('ready', flush=True)
        deadline = time.time() + 30
        while time.time() < deadline and ({poll} and not stop.requested):
            time.sleep(0.05)
        time.sleep({blocking})   # stands for a long session.run
        return 'done'
    print(stop.run(work), flush=True)
''')


def _start_waiter(poll, blocking):
    source = WAITER.format(root=ROOT, poll=poll, blocking=blocking)
    process = subprocess.Popen([sys.executable, '-c', source], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == 'ready'
    return process


def test_first_sigint_lets_the_work_finish_second_exits_at_once():
    process = _start_waiter(poll=True, blocking=0)
    process.send_signal(signal.SIGINT)
    assert process.communicate(timeout=30)[0].strip() == 'done' and process.returncode == 0
    process = _start_waiter(poll=False, blocking=60)
    process.send_signal(signal.SIGINT)
    time.sleep(1.5)                                # past SAME_REQUEST_SECS: a second press
    start = time.time()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGINT and time.time() - start < 5


def test_a_signal_delivered_twice_at_once_still_saves():
    """GNU timeout -s INT signals the command and then its process group: two SIGINTs at once, one request.
    The second here comes after the first's handler ran, as it may there (back to back, the two merge)."""
    process = _start_waiter(poll=False, blocking=0.5)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    assert process.communicate(timeout=30)[0].strip() == 'done' and process.returncode == 0


SAVER = textwrap.dedent('''
    import os, sys
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
    sys.path.insert(0, {root!r})
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    from utils.checkpoints import make_saver
    big = tf.Variable(tf.zeros([8 * 1024 * 1024]), name='big')
    value = tf.placeholder(tf.float32, [])
    fill = big.assign(tf.fill([8 * 1024 * 1024], value))
    saver = make_saver()
    with tf.Session() as session:
        for step in range(1, 1000):
            session.run(fill, {{value: float(step)}})
            print('saving', step, flush=True)
            saver.save(session, {prefix!r}, global_step=step)
''')


@pytest.mark.parametrize('delay', [0.0, 0.02, 0.08])
def test_kill_9_during_a_save_leaves_a_complete_checkpoint(tmp_path, delay):
    """The state file only ever names complete checkpoints: the latest one restores whole."""
    source = SAVER.format(root=ROOT, prefix=str(tmp_path / 'model.ckpt'))
    process = subprocess.Popen([sys.executable, '-c', source], stdout=subprocess.PIPE, text=True)
    try:
        while process.stdout.readline().strip() != 'saving 3':
            assert process.poll() is None
        time.sleep(delay)
    finally:
        process.kill()
        process.wait()
    latest = tf.train.latest_checkpoint(str(tmp_path))
    step = int(latest.rsplit('-', 1)[1])
    assert step >= 2
    values = tf.train.load_variable(latest, 'big')
    assert values.shape == (8 * 1024 * 1024,) and np.all(values == step)


def test_session_config():
    config = devices.session_config(0.5, cpu_devices=2, device_filters=['/job:ps', '/job:worker/task:1'])
    assert config.device_count['CPU'] == 2 and config.allow_soft_placement
    assert config.gpu_options.per_process_gpu_memory_fraction == 0.5
    assert list(config.device_filters) == ['/job:ps', '/job:worker/task:1']
    assert config.operation_timeout_in_ms == 0                     # one process: no bound
    assert devices.session_config(0.5, operation_timeout_secs=600).operation_timeout_in_ms == 600000
