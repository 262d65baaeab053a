"""The course's training helpers around slim.learning.train: the train op, the summaries, and the step
function built from small policies (stop, log, checkpoint cadence, summary cadence).

slim.learning.train runs the loop, creates the session (restoring a train_dir checkpoint), and saves the final
checkpoint when the step function asks to stop. Three of its services are replaced, for reasons:
- checkpoints: its supervisor saves from a background thread at any moment; CheckpointPolicy saves between two
  steps, and only weights checked finite. tf.train.Saver writes the data and index files first and then
  atomically replaces the 'checkpoint' state file, so a process killed during a save leaves the state file
  pointing at the previous complete checkpoint;
- summaries: its summary thread would run the summary op, which pulls a batch from the input pipeline, beside
  the training step; SummaryPolicy adds the summary op to a step's fetches when one is due;
- the log line: its line has the total loss only; SpeedLog adds the components, the rate and images/s.
"""
import collections
import dataclasses
import math
import os
import time
from typing import Optional

import tensorflow.compat.v1 as tf
from absl import logging

from datasets import bad_samples
from utils import clones
from utils.checkpoints import CHECKPOINT_BASENAME
from utils.errors import UserError

LOSS_LOG_NAMES = (('cross_entropy_pos', 'pos'), ('cross_entropy_neg', 'neg'), ('localization', 'loc'),
                  ('regularization', 'reg'))


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite."""


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
    return TrainOp(train_tensor, total_loss, sync_optimizer, after_restore_op, [v for _, v in grads_and_vars])


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


class Cadence:
    """Due every `every_secs` seconds and/or when the global step crosses a multiple of `every_steps`.
    The seconds count from construction, or with due_at_first, the first check is due at once."""

    def __init__(self, every_secs=0, every_steps=0, clock=time.time, due_at_first=False):
        self.every_secs, self.every_steps, self.clock = every_secs, every_steps, clock
        self.last_time = None if due_at_first else clock()
        self.last_step = None

    def due(self, step=None):
        by_steps = step is not None and self.last_step is not None and crossed(step, self.last_step,
                                                                               self.every_steps)
        by_time = self.every_secs > 0 and (self.last_time is None or self.clock() - self.last_time >= self.every_secs)
        return by_steps or by_time

    def start(self, step):
        """The first global step this process sees: steps count from it."""
        self.last_step = step

    def mark(self, step=None):
        self.last_time = self.clock()
        if step is not None:
            self.last_step = step


class StopPolicy:
    """Stop at max_number_of_steps, on a StopRequest (Ctrl-C), or when the chief raised the cluster's stop flag
    (distributed.ClusterStop); any of them may be None."""

    def __init__(self, max_number_of_steps=None, stop_request=None, cluster_stop=None):
        self.max_number_of_steps, self.stop_request, self.cluster_stop = max_number_of_steps, stop_request, cluster_stop

    def should_stop(self, session, step):
        return ((self.stop_request is not None and self.stop_request.requested)
                or (self.max_number_of_steps is not None and step >= self.max_number_of_steps)
                or (self.cluster_stop is not None and self.cluster_stop.requested(session)))

    def report_lost_cluster(self, error):
        if self.stop_request is not None:
            self.stop_request.report_lost_cluster(error)


class SpeedLog:
    """Every `every_n_steps` global steps, one format_losses line (sec/step averaged since the last line;
    images_per_step: this process's batch)."""

    def __init__(self, every_n_steps, images_per_step):
        self.cadence = Cadence(every_steps=every_n_steps)
        self.images_per_step = images_per_step
        self.timed_steps, self.timed_secs = 0, 0.0

    def record(self, step, elapsed, losses, learning_rate, note=''):
        """note: appended to the line after ' | ' when not empty (the bad samples skipped so far)."""
        self.timed_steps += 1
        self.timed_secs += elapsed
        if self.cadence.due(step):
            line = format_losses(step, losses, learning_rate, self.timed_secs / self.timed_steps, self.images_per_step)
            logging.info(f'{line} | {note}' if note else line)
            self.timed_steps, self.timed_secs = 0, 0.0
            self.cadence.mark(step)


class CheckpointPolicy:
    """The chief's checkpoints: every interval_secs and/or every_n_steps, between two steps, weights checked
    finite first (weights_finite: weights_finite_op, or None)."""

    def __init__(self, saver, train_dir, weights_finite, interval_secs=600, every_n_steps=0, clock=time.time):
        self.saver, self.weights_finite = saver, weights_finite
        self.save_path = os.path.join(train_dir, CHECKPOINT_BASENAME)
        self.cadence = Cadence(interval_secs, every_n_steps, clock)

    def maybe_save(self, session, step):
        if step != self.cadence.last_step and self.cadence.due(step):
            self.save(session, step)

    def save(self, session, step):
        """Write a checkpoint at `step` after checking the weights are finite."""
        self.check_weights(session, step)
        path = self.saver.save(session, self.save_path, global_step=step)
        self.cadence.mark(step)
        logging.info('Saved checkpoint %s', path)

    def check_weights(self, session, step):
        if self.weights_finite is not None and not session.run(self.weights_finite):
            raise TrainingDiverged(f'step {step}: the weights hold NaN or Inf; training stopped without saving '
                                   f'them, so the last checkpoint is the last good one. Lower --learning_rate '
                                   f'(or add --warmup_steps) and resume')


class SummaryPolicy:
    """The chief's summaries: summary_op on the first step, then every interval_secs (0: never), written with
    the step's summary_writer (slim.learning.train passes it in train_step_kwargs)."""

    def __init__(self, summary_op, interval_secs=600, clock=time.time):
        self.summary_op = summary_op
        self.cadence = Cadence(interval_secs, clock=clock, due_at_first=True)

    def write(self, train_step_kwargs, summary, step):
        writer = train_step_kwargs.get('summary_writer')
        if writer is not None:
            writer.add_summary(summary, step)
        self.cadence.mark()


def check_losses_finite(step, losses, train_dir):
    """TrainingDiverged when a loss value is NaN or infinite: the loop ends without saving."""
    if not all(math.isfinite(float(v)) for v in losses.values()):
        parts = ', '.join(f'{name} {float(value):g}' for name, value in sorted(losses.items()))
        raise TrainingDiverged(f'step {step}: the loss is not finite ({parts}); training stopped without saving, '
                               f'so the last checkpoint in {train_dir} is the last good one. Lower --learning_rate '
                               f'(or add --warmup_steps) and resume')


class TrainStep:
    """train_step_fn for slim.learning.train: one step (the train op, the loss components and the learning
    rate, plus the summary op when one is due), then the NaN guard, the log line, the stop decision (the chief
    checks its weights and tells the cluster before slim.learning.train saves the final checkpoint) or a due
    checkpoint. checkpoints and summaries are None on non-chief workers. samples (a BadSampleMonitor, or None)
    adds up the undecodable records each batch passed over. When reading the records fails, or too many samples
    are bad, the chief saves a checkpoint at the last completed step before the UserError."""

    def __init__(self, losses, learning_rate, stop, speed_log, checkpoints=None, summaries=None, samples=None):
        self.fetches = {'losses': dict(losses), 'learning_rate': learning_rate}
        self.stop, self.speed_log, self.checkpoints, self.summaries = stop, speed_log, checkpoints, summaries
        self.samples = samples
        if samples is not None:
            self.fetches['samples'] = samples.fetches
        self.loss_history = []  # (global step, total loss) of every step this process ran
        self.current_step = None

    def __call__(self, session, train_op, global_step, train_step_kwargs):
        if self.current_step is None:
            self.current_step = int(session.run(global_step))
            for policy in (self.speed_log, self.checkpoints):
                if policy is not None:
                    policy.cadence.start(self.current_step)
        if self.stop.should_stop(session, self.current_step):
            return self._stop(session)
        fetches = dict(self.fetches, train_op=train_op)
        summary_due = self.summaries is not None and self.summaries.cadence.due()
        if summary_due:
            fetches['summary'] = self.summaries.summary_op
        start = time.time()
        try:
            values = session.run(fetches)
            step = self.current_step = int(session.run(global_step))
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as err:
            self.stop.report_lost_cluster(err)
            raise
        except tf.errors.OpError as err:
            if bad_samples.is_input_failure(err):   # a shard removed or damaged while training
                self._save_and_fail(session, bad_samples.input_failure_message(err, self.current_step))
            raise
        losses = values['losses']
        check_losses_finite(step, losses, os.path.dirname(self.checkpoints.save_path) if self.checkpoints
                            else 'train_dir')
        self.loss_history.append((step, float(losses['total'])))
        if self.samples is not None and (problem := self.samples.check(values['samples'])):
            self._save_and_fail(session, problem)
        if summary_due:
            self.summaries.write(train_step_kwargs, values['summary'], step)
        self.speed_log.record(step, time.time() - start, losses, float(values['learning_rate']),
                              self.samples.note() if self.samples is not None else '')
        if self.stop.should_stop(session, step):
            return self._stop(session)
        if self.checkpoints is not None:
            self.checkpoints.maybe_save(session, step)
        return self.loss_history[-1][1], False

    def _stop(self, session):
        """(last loss, True); the chief first checks the weights it is about to save and tells the cluster."""
        logging.info('Training stops at global step %d; this process ran %d step(s)%s', self.current_step,
                     len(self.loss_history), f'; {self.samples.summary()}' if self.samples is not None else '')
        if self.checkpoints is not None:
            self.checkpoints.check_weights(session, self.current_step)
            if self.stop.cluster_stop is not None:
                self.stop.cluster_stop.announce(session)
        return (self.loss_history[-1][1] if self.loss_history else None), True

    def _save_and_fail(self, session, message):
        """UserError(message), after the chief saved a checkpoint at the last completed step (weights checked
        finite first), so that the same command resumes from there once the data is fixed."""
        if self.checkpoints is not None:
            self.checkpoints.save(session, self.current_step)
            message += f'; checkpoint saved at step {self.current_step}: run the same command to resume'
        raise UserError(message)
