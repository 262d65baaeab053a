"""The training loop's pieces around slim.learning.train: the train op, the step function (logging, NaN
guard, checkpoints, summaries, stop requests), signal handling, saver, session config and summaries.

Checkpoints are written only here (every save_interval_secs / save_every_n_steps) and by
slim.learning.train when the loop stops, never by the supervisor's background thread, so a checkpoint
is always taken between two steps and only after its weights were checked finite. tf.train.Saver
writes the data and index files first and then atomically replaces the 'checkpoint' state file, so a
process killed during a save leaves the state file pointing at the previous complete checkpoint.
"""
import collections
import math
import os
import signal
import threading
import time

import tensorflow.compat.v1 as tf
from absl import logging

from utils import clones
from utils.errors import UserError

CHECKPOINT_BASENAME = 'model.ckpt'   # slim.learning.train's final save uses the same prefix
LOSS_LOG_NAMES = (('cross_entropy_pos', 'pos'), ('cross_entropy_neg', 'neg'), ('localization', 'loc'),
                  ('regularization', 'reg'))


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite."""


class StopRequest:
    """The first SIGINT / SIGTERM asks the loop to stop after the step in progress (a checkpoint is
    saved); the default handlers are then restored, so a second signal ends the process at once.

    Python runs signal handlers in the main thread only between bytecodes, not during a long
    session.run; `run(fn)` therefore runs the training in a worker thread while the main thread waits,
    so both signals take effect immediately.
    """

    def __init__(self):
        self.signal_name = None
        self._signals = ()
        self.lost_cluster = None   # (error, time) once a session.run lost a parameter server
        self.abandoned = False     # run() returned while fn's thread was still stuck in TensorFlow

    @property
    def requested(self):
        return self.signal_name is not None

    def install(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self._signals = tuple(signals)
        for signum in self._signals:
            signal.signal(signum, self._handle)
        return self

    def report_lost_cluster(self, error):
        """Called from the training thread: TensorFlow lost a task; its session cannot close cleanly."""
        if self.lost_cluster is None:
            self.lost_cluster = (error, time.time())

    def run(self, fn, abandon_after_secs=10.0):
        """fn() in a worker thread; returns its result or re-raises its exception here. Once the thread
        reported a lost cluster task, it is given abandon_after_secs to finish (the supervisor's session
        close can hang on a dead parameter server), then the error is raised here with `abandoned` set."""
        outcome = {}

        def target():
            try:
                outcome['value'] = fn()
            except BaseException as err:  # handed to the main thread below
                outcome['error'] = err

        worker = threading.Thread(target=target, name='training', daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
            if self.lost_cluster and time.time() - self.lost_cluster[1] > abandon_after_secs:
                self.abandoned = True
                raise self.lost_cluster[0]
        if 'error' in outcome:
            raise outcome['error']
        return outcome.get('value')

    def _handle(self, signum, frame):
        del frame
        self.signal_name = signal.Signals(signum).name
        for other in self._signals:
            signal.signal(other, signal.SIG_DFL)
        logging.warning('%s received: saving a checkpoint after the step in progress, then exiting '
                        '(send it again to quit at once without saving)', self.signal_name)


def make_saver(max_to_keep=5, keep_checkpoint_every_n_hours=1.0, saver_class=tf.train.Saver, **extra):
    """The checkpoint saver (V2 format, paths in the state file relative to train_dir)."""
    return saver_class(max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
                       write_version=tf.train.SaverDef.V2, pad_step_number=False, save_relative_paths=True,
                       **extra)


def session_config(gpu_memory_fraction, cpu_devices=1, device_filters=None, operation_timeout_secs=0):
    """ConfigProto: GPU memory fraction, `cpu_devices` logical CPU devices (one per CPU clone), soft
    placement (so CPU-only kernels fall back), device filters for distributed workers, and, when
    operation_timeout_secs > 0, that bound on every blocking call (a cluster worker whose parameter
    server stops answering without closing its connection gets DeadlineExceededError, not a hang)."""
    config = tf.ConfigProto(allow_soft_placement=True, log_device_placement=False,
                            device_count={'CPU': cpu_devices},
                            gpu_options=tf.GPUOptions(per_process_gpu_memory_fraction=gpu_memory_fraction))
    if device_filters:
        config.device_filters.extend(device_filters)
    if operation_timeout_secs:
        config.operation_timeout_in_ms = int(operation_timeout_secs * 1000)
    return config


TrainOp = collections.namedtuple('TrainOp', [
    'train_tensor',      # the total loss, evaluated after every update of the step
    'total_loss',        # what is minimised (clones.optimize_clones)
    'sync_optimizer',    # the SyncReplicasOptimizer, or None
    'after_restore_op',  # copies the weights into their moving averages (None without averages)
])


def make_train_op(clone_list, optimizer, global_step, var_list, model_variables, moving_average_decay=None,
                  sync_replicas=None):
    """One training step over the clones: the clone-mean loss's gradients (clones.optimize_clones, for
    var_list) applied by `optimizer`, the first clone's batch-norm updates, and, with moving_average_decay,
    exponential moving averages of model_variables. sync_replicas = (replicas_to_aggregate,
    total_num_replicas) wraps the optimizer in tf.train.SyncReplicasOptimizer, which then updates the
    averages itself. Returns a TrainOp."""
    averages = (tf.train.ExponentialMovingAverage(moving_average_decay, global_step)
                if moving_average_decay else None)
    sync_optimizer = None
    if sync_replicas:
        optimizer = sync_optimizer = tf.train.SyncReplicasOptimizer(
            optimizer, replicas_to_aggregate=sync_replicas[0], total_num_replicas=sync_replicas[1],
            variable_averages=averages, variables_to_average=model_variables if averages else None)
    total_loss, grads_and_vars = clones.optimize_clones(
        clone_list, optimizer, tf.losses.get_regularization_losses(), var_list)
    update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS, clone_list[0].scope)
    if averages and not sync_optimizer:
        update_ops.append(averages.apply(model_variables))
    update_ops.append(optimizer.apply_gradients(grads_and_vars, global_step=global_step))
    # Moving averages start from the weights the chief loads, not from the random initialisers.
    after_restore_op = tf.group(*[averages.average(v).assign(v) for v in model_variables]) if averages else None
    with tf.control_dependencies(update_ops):
        train_tensor = tf.identity(total_loss, name='train_op')
    return TrainOp(train_tensor, total_loss, sync_optimizer, after_restore_op)


def logged_losses(clone_list, total_loss):
    """The values logged and summarised each step: every loss component averaged over the clones, plus
    'regularization' (the weight-decay sum; 0 without) and 'total' (what is minimised)."""
    losses = clones.mean_clone_losses(clone_list)
    regularization = tf.losses.get_regularization_losses()
    losses['regularization'] = tf.add_n(regularization) if regularization else tf.constant(0.0)
    losses['total'] = total_loss
    return losses


def weights_finite_op(variables):
    """A bool scalar: every element of every variable is finite."""
    with tf.name_scope('weights_finite'):
        return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables]))


def input_image_summary(images, boxes, mean_rgb, max_outputs=3):
    """Image summary of the first inputs with their ground-truth boxes drawn.

    images: [B, H, W, 3] NHWC float32 with mean_rgb subtracted; boxes [B, M, 4] yxyx normalised.
    """
    with tf.name_scope('input_summary'):
        shown = tf.clip_by_value((images[:max_outputs] + tf.constant(mean_rgb, tf.float32)) / 255.0, 0.0, 1.0)
        drawn = tf.image.draw_bounding_boxes(shown, boxes[:max_outputs])
    return tf.summary.image('inputs_with_boxes', drawn, max_outputs=max_outputs)


def training_summaries(losses, learning_rate, extra=()):
    """Merged summary op: each loss component under 'losses/', the learning rate, and `extra` summaries."""
    summaries = [tf.summary.scalar('losses/' + name, value) for name, value in sorted(losses.items())]
    summaries.append(tf.summary.scalar('learning_rate', learning_rate))
    return tf.summary.merge(summaries + list(extra), name='summary_op')


def format_losses(step, losses, learning_rate, sec_per_step, images_per_step):
    """'step 40: loss 5.2130 (pos 1.1 neg 2.0 loc 1.9 reg 0.2) lr 0.001 | 0.52 sec/step, 15.4 images/s'."""
    parts = ' '.join(f'{short} {losses[name]:.4f}' for name, short in LOSS_LOG_NAMES if name in losses)
    rate = images_per_step / sec_per_step if sec_per_step > 0 else float('inf')
    return (f'step {step}: loss {losses["total"]:.4f} ({parts}) lr {learning_rate:.6g} | '
            f'{sec_per_step:.3f} sec/step, {rate:.1f} images/s')


def crossed(step, previous, every):
    """True when a multiple of `every` lies in (previous, step]: the cadence survives steps skipped
    because other workers advanced the global step."""
    return every > 0 and step // every > previous // every


class TrainStep:
    """train_step_fn for slim.learning.train.

    Each call runs one step (the train op, the loss components and the learning rate; the summary op
    too when save_summaries_secs have passed), then: a non-finite loss raises TrainingDiverged (the
    loop ends without saving, so the last checkpoint stays the last good one); every log_every_n_steps
    it logs the losses, sec/step and images/s (images_per_step = this process's batch); it asks to stop
    at max_number_of_steps, on a stop request, or when the chief raised the cluster's stop flag
    (slim.learning.train then saves the final checkpoint on the chief, and the chief raises that flag);
    otherwise the chief saves a checkpoint when one is due. Only the chief (saver given) writes
    checkpoints and summaries.
    """

    def __init__(self, losses, learning_rate, weights_finite, images_per_step, log_every_n_steps,
                 max_number_of_steps=None, stop_request=None, saver=None, save_path=None,
                 save_interval_secs=600, save_every_n_steps=0, summary_op=None, save_summaries_secs=600,
                 cluster_stop=None, clock=time.time):
        self.fetches = {'losses': dict(losses), 'learning_rate': learning_rate}
        self.weights_finite = weights_finite
        self.images_per_step = images_per_step
        self.log_every_n_steps = log_every_n_steps
        self.max_number_of_steps = max_number_of_steps
        self.stop_request, self.cluster_stop = stop_request, cluster_stop
        self.saver, self.save_path = saver, save_path
        self.save_interval_secs, self.save_every_n_steps = save_interval_secs, save_every_n_steps
        self.summary_op, self.save_summaries_secs = summary_op, save_summaries_secs
        self.clock = clock
        self.last_save_time = clock()
        self.last_summary_time = None  # summaries on the first step, then every save_summaries_secs
        self.last_saved_step = self.last_logged_step = None
        self.timed_steps, self.timed_secs = 0, 0.0
        self.last_loss = None
        self.loss_history = []  # (global step, total loss) of every step this process ran
        self.current_step = None

    def __call__(self, session, train_op, global_step, train_step_kwargs):
        if self.current_step is None:
            self.current_step = self.last_saved_step = self.last_logged_step = int(session.run(global_step))
        if self._should_stop(session, self.current_step):
            return self._stop(session, self.current_step)
        fetches = dict(self.fetches, train_op=train_op)
        summary_due = self.summary_op is not None and self._due(self.last_summary_time, self.save_summaries_secs)
        if summary_due:
            fetches['summary'] = self.summary_op
        start = self.clock()
        try:
            values = session.run(fetches)
            step = self.current_step = int(session.run(global_step))
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as err:
            if self.stop_request is not None:
                self.stop_request.report_lost_cluster(err)
            raise
        elapsed = self.clock() - start
        losses = values['losses']
        if not all(math.isfinite(float(v)) for v in losses.values()):
            raise TrainingDiverged(self._diverged_message(step, losses))
        self.last_loss = float(losses['total'])
        self.loss_history.append((step, self.last_loss))
        self.timed_steps += 1
        self.timed_secs += elapsed
        if summary_due:
            writer = train_step_kwargs.get('summary_writer')
            if writer is not None:
                writer.add_summary(values['summary'], step)
            self.last_summary_time = self.clock()
        if crossed(step, self.last_logged_step, self.log_every_n_steps):
            logging.info(format_losses(step, losses, float(values['learning_rate']),
                                       self.timed_secs / self.timed_steps, self.images_per_step))
            self.timed_steps, self.timed_secs, self.last_logged_step = 0, 0.0, step
        if self._should_stop(session, step):
            return self._stop(session, step)
        if self.saver is not None and self._save_due(step):
            self.save(session, step)
        return self.last_loss, False

    def save(self, session, step):
        """Write a checkpoint at `step` after checking the weights are finite."""
        self._check_weights(session, step)
        path = self.saver.save(session, self.save_path, global_step=step)
        self.last_save_time, self.last_saved_step = self.clock(), step
        logging.info('Saved checkpoint %s', path)

    def _should_stop(self, session, step):
        return ((self.stop_request is not None and self.stop_request.requested)
                or (self.max_number_of_steps is not None and step >= self.max_number_of_steps)
                or (self.cluster_stop is not None and self.cluster_stop.requested(session)))

    def _stop(self, session, step):
        """(last loss, True); the chief first checks the weights it is about to save and tells the cluster."""
        logging.info('Training stops at global step %d; this process ran %d step(s)', step, len(self.loss_history))
        if self.saver is not None:
            self._check_weights(session, step)
            if self.cluster_stop is not None:
                self.cluster_stop.announce(session)
        return self.last_loss, True

    def _due(self, since, interval_secs):
        return interval_secs > 0 and (since is None or self.clock() - since >= interval_secs)

    def _save_due(self, step):
        return step != self.last_saved_step and (crossed(step, self.last_saved_step, self.save_every_n_steps)
                                                 or self._due(self.last_save_time, self.save_interval_secs))

    def _check_weights(self, session, step):
        if self.weights_finite is not None and not session.run(self.weights_finite):
            raise TrainingDiverged(f'step {step}: the weights hold NaN or Inf; training stopped without saving '
                                   f'them, so the last checkpoint is the last good one. Lower --learning_rate '
                                   f'(or add --warmup_steps) and resume')

    def _diverged_message(self, step, losses):
        where = os.path.dirname(self.save_path) if self.save_path else 'train_dir'
        parts = ', '.join(f'{name} {float(value):g}' for name, value in sorted(losses.items()))
        return (f'step {step}: the loss is not finite ({parts}); training stopped without saving, so the '
                f'last checkpoint in {where} is the last good one. Lower --learning_rate (or add '
                f'--warmup_steps) and resume')
