"""The course's training helpers around slim.learning.train: the train op, the summaries, and the step
function (TrainStep) built from the small policies of utils/step_policies.py (stop, log, NaN guard,
checkpoint and summary cadences).

slim.learning.train runs the loop, creates the session (restoring a train_dir checkpoint), and saves the final
checkpoint when the step function asks to stop.
"""
import collections
import dataclasses
import os
import time
from typing import Optional

import tensorflow.compat.v1 as tf
from absl import logging

from datasets import bad_samples
from utils import clones, distributed
from utils.errors import UserError
from utils.step_policies import LEARNING_RATE_TAG, LOSS_TAG_PREFIX, STARTUP_CHECK_HINT, LossJumpWatch, \
    check_losses_finite


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Where the loop writes, how often it logs, saves and summarises, and when it stops."""
    train_dir: str = './ckpt/fine_tuning'
    log_every_n_steps: int = 10             # 0: never
    save_summaries_secs: int = 600          # 0: never
    save_interval_secs: int = 600           # 0: only when training stops
    save_every_n_steps: int = 0             # 0: off
    max_number_of_steps: Optional[int] = None


TrainOp = collections.namedtuple('TrainOp', [
    'train_tensor',       # the total loss, evaluated after every update of the step
    'step_after_update',  # the global step, read after every update of the step (None with sync replicas)
    'total_loss',         # what is minimised (clones.optimize_clones)
    'sync_optimizer',     # the SyncReplicasOptimizer, or None
    'after_restore_op',   # copies the weights into their moving averages (None without averages)
    'trained_variables',  # the variables that get a gradient
])


def make_train_op(clone_list, optimizer, global_step, var_list, model_variables, moving_average_decay=None,
                  replicas_to_aggregate=0, num_workers=1):
    """One training step over the clones: the clone-mean loss's gradients (clones.optimize_clones, for
    var_list) applied by `optimizer`, the first clone's batch-norm updates, and, with moving_average_decay,
    exponential moving averages of model_variables. replicas_to_aggregate > 0 wraps the optimizer in
    tf.train.SyncReplicasOptimizer over num_workers workers, which then updates the averages itself."""
    averages = (tf.train.ExponentialMovingAverage(moving_average_decay, global_step)
                if moving_average_decay else None)
    sync_optimizer = None
    if replicas_to_aggregate:
        optimizer = sync_optimizer = tf.train.SyncReplicasOptimizer(
            optimizer, replicas_to_aggregate=replicas_to_aggregate, total_num_replicas=num_workers,
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
        # With sync replicas the chief's aggregation moves the global step, not this op: read it separately.
        step_after_update = None if sync_optimizer else tf.identity(global_step, name='step_after_update')
    return TrainOp(train_tensor, step_after_update, total_loss, sync_optimizer, after_restore_op,
                   [v for _, v in grads_and_vars])


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
    summaries = [tf.summary.scalar(LOSS_TAG_PREFIX + name, value) for name, value in sorted(losses.items())]
    summaries.append(tf.summary.scalar(LEARNING_RATE_TAG, learning_rate))
    return tf.summary.merge(summaries + list(extra), name='summary_op')


class TrainStep:
    """train_step_fn for slim.learning.train: one step (the train op and `tensors`, plus the summary op when one
    is due), then the NaN guard, the log line, the stop decision (the chief checks its weights and tells the
    cluster before slim.learning.train saves the final checkpoint) or a due checkpoint. tensors: {'losses':
    {component: scalar}, 'learning_rate': scalar, 'step': TrainOp.step_after_update, the global step read after
    the update so that one session call does the step; None (sync replicas): read in a second call}.
    checkpoints and summaries are None on non-chief workers. samples (a BadSampleMonitor, or None) adds up the
    undecodable records each batch passed over. When reading the records fails, or too many samples are bad,
    the chief saves a checkpoint at the last completed step before the UserError; on a read failure,
    dataset_watch (a DatasetWatch, or None) then says which shard is damaged."""

    def __init__(self, tensors, stop, speed_log, checkpoints=None, summaries=None, samples=None, dataset_watch=None):
        self.fetches = {key: value for key, value in tensors.items() if value is not None}
        self.stop, self.speed_log, self.checkpoints, self.summaries = stop, speed_log, checkpoints, summaries
        self.samples, self.dataset_watch = samples, dataset_watch
        if samples is not None:
            self.fetches['samples'] = samples.fetches
        self.loss_history = []  # (global step, total loss) of every step this process ran
        self.loss_jump = LossJumpWatch()
        self.current_step = None

    def __call__(self, session, train_op, global_step, train_step_kwargs):
        try:
            return self._step(session, train_op, global_step, train_step_kwargs)
        except distributed.LOST_CLUSTER_ERRORS as err:
            # Whichever of the step's session calls first finds a task gone (the train op, the cluster's stop
            # flag, a checkpoint): the StopRequest then ends the process, whose session close would hang.
            self.stop.report_lost_cluster(err)
            raise

    def _step(self, session, train_op, global_step, train_step_kwargs):
        if self.current_step is None:
            self.current_step = int(session.run(global_step))
            for policy in (self.speed_log, self.checkpoints):
                if policy is not None:
                    policy.cadence.start(self.current_step)
        if self.stop.should_stop(session, self.current_step):
            return self._stop(session, train_step_kwargs)
        fetches = dict(self.fetches, train_op=train_op)
        summary_due = self.summaries is not None and self.summaries.cadence.due()
        if summary_due:
            fetches['summary'] = self.summaries.summary_op
        start = time.time()
        try:
            values = session.run(fetches)
        except tf.errors.OpError as err:
            # A shard removed or damaged while training (a lost cluster task is __call__'s to report).
            if bad_samples.is_input_failure(err) and not isinstance(err, distributed.LOST_CLUSTER_ERRORS):
                saved = self._save_for_resume(session)   # first: the record check may take minutes
                diagnosis = self.dataset_watch.damaged_shard() if self.dataset_watch else STARTUP_CHECK_HINT
                raise UserError(bad_samples.input_failure_message(err, self.current_step, diagnosis) + saved) from None
            raise
        step = self.current_step = int(values['step'] if 'step' in values else session.run(global_step))
        losses = values['losses']
        check_losses_finite(step, losses, os.path.dirname(self.checkpoints.save_path) if self.checkpoints
                            else 'train_dir')
        self.loss_history.append((step, float(losses['total'])))
        self.loss_jump.record(*self.loss_history[-1])
        if self.samples is not None and (problem := self.samples.check(values['samples'])):
            self._save_and_fail(session, problem)
        if self.dataset_watch is not None and (problem := self.dataset_watch.problem()):
            self._save_and_fail(session, f'step {step}: {problem}', 'run the same command: it says how to go on '
                                                                    'from it with these records')
        if summary_due:
            self.summaries.write(train_step_kwargs, values['summary'], step)
        self.speed_log.record(step, time.time() - start, losses, float(values['learning_rate']),
                              self.samples.note() if self.samples is not None else '')
        if self.stop.should_stop(session, step):
            return self._stop(session, train_step_kwargs)
        if self.checkpoints is not None:
            self.checkpoints.maybe_save(session, step)
        return self.loss_history[-1][1], False

    def _stop(self, session, train_step_kwargs):
        """(last loss, True); the chief first writes the last step's scalars, checks the weights it is about to
        save and tells the cluster."""
        logging.info('Training stops at global step %d; this process ran %d step(s)%s', self.current_step,
                     len(self.loss_history), f'; {self.samples.summary()}' if self.samples is not None else '')
        if self.summaries is not None and self.speed_log.last is not None:
            self.summaries.write_last_scalars(train_step_kwargs, *self.speed_log.last)
        if self.checkpoints is not None:
            self.checkpoints.check_weights(session, self.current_step)
            if self.stop.cluster_stop is not None:
                self.stop.cluster_stop.announce(session)
        return (self.loss_history[-1][1] if self.loss_history else None), True

    def _save_for_resume(self, session, then='run the same command to resume'):
        """On the chief, a checkpoint at the last completed step (weights checked finite first), so that the
        same command resumes from there once the data is fixed, and the words saying so ('; checkpoint saved at
        step N: <then>'); '' on other workers."""
        if self.checkpoints is None:
            return ''
        self.checkpoints.save(session, self.current_step)
        return f'; checkpoint saved at step {self.current_step}: {then}'

    def _save_and_fail(self, session, message, then='run the same command to resume'):
        """UserError(message), after _save_for_resume; `then`: what to do."""
        raise UserError(message + self._save_for_resume(session, then))
