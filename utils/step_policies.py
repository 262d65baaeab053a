"""The small policies train_tools.TrainStep is built from: when to stop, the log line (losses, speed, progress
and time left), the NaN guard, and the chief's checkpoint and summary cadences.

They replace three services of slim.learning.train, for reasons:
- checkpoints: its supervisor saves from a background thread at any moment; CheckpointPolicy saves between two
  steps, and only weights checked finite. tf.train.Saver writes the data and index files first and then
  atomically replaces the 'checkpoint' state file, so a process killed during a save leaves the state file
  pointing at the previous complete checkpoint;
- summaries: its summary thread would run the summary op, which pulls a batch from the input pipeline, beside
  the training step; SummaryPolicy adds the summary op to a step's fetches when one is due;
- the log line: its line has the total loss only; SpeedLog adds the components, the rate, images/s and, when
  the run has a step limit, how far along it is and the time left.
ResumingEventWriter is the chief's event file writer, for slim.learning.train to use in place of its own.
"""
import math
import os
import time

import tensorflow.compat.v1 as tf
from absl import logging
from tensorflow.core.framework.summary_pb2 import Summary
from tensorflow.core.util.event_pb2 import SessionLog

from datasets import dataset_info as ds_info
from utils.checkpoints import CHECKPOINT_BASENAME
from utils.errors import UserError

LOSS_TAG_PREFIX, LEARNING_RATE_TAG = 'losses/', 'learning_rate'   # TensorBoard's names of the scalars
LOSS_LOG_NAMES = (('cross_entropy_pos', 'pos'), ('cross_entropy_neg', 'neg'), ('localization', 'loc'),
                  ('regularization', 'reg'))
# A process's first steps build oneDNN's kernels and fill the input pipeline (at depth 0.125: 1.5 s and 1.0 s,
# then 0.1 s a step): SpeedLog's rate for the expected duration is measured after them.
WARMUP_STEPS = 2
# A run whose steps are slow (full width on a CPU: about 30 s) logs its first line once this long has passed
# after the warm-up steps, rather than minutes later at the first multiple of --log_every_n_steps.
FIRST_LINE_SECS = 60.0


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite."""


def format_loss_values(losses, learning_rate):
    """'loss 5.2130 (pos 1.1000 neg 2.0000 loc 1.9000 reg 0.2000) lr 0.001'."""
    parts = ' '.join(f'{short} {losses[name]:.4f}' for name, short in LOSS_LOG_NAMES if name in losses)
    return f'loss {losses["total"]:.4f} ({parts}) lr {learning_rate:.6g}'


def format_losses(step, losses, learning_rate, sec_per_step, images_per_step):
    """'step 40: loss 5.2130 (pos 1.1 neg 2.0 loc 1.9 reg 0.2) lr 0.001 | 0.52 sec/step, 15.4 images/s'."""
    rate = images_per_step / sec_per_step if sec_per_step > 0 else float('inf')
    return (f'step {step}: {format_loss_values(losses, learning_rate)} | '
            f'{sec_per_step:.3f} sec/step, {rate:.1f} images/s')


def format_duration(secs):
    """'40 s' under 90 s, '12 min' under 90 min, else '2.5 h'."""
    if secs < 90:
        return f'{secs:.0f} s'
    if secs < 90 * 60:
        return f'{secs / 60:.0f} min'
    return f'{secs / 3600:.1f} h'


def format_progress(step, max_number_of_steps, secs_per_global_step):
    """'35% of 3000, about 12 min left': the time left at the given rate (wall seconds per global step)."""
    left = max(0, max_number_of_steps - step) * secs_per_global_step
    return f'{100 * step / max_number_of_steps:.0f}% of {max_number_of_steps}, about {format_duration(left)} left'


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
        self.stopped_with_the_chief = False   # the cluster's flag, not this process, ended the run

    def should_stop(self, session, step):
        if ((self.stop_request is not None and self.stop_request.requested)
                or (self.max_number_of_steps is not None and step >= self.max_number_of_steps)):
            return True
        self.stopped_with_the_chief = self.cluster_stop is not None and self.cluster_stop.requested(session)
        return self.stopped_with_the_chief

    def report_lost_cluster(self, error):
        if self.stop_request is not None:
            self.stop_request.report_lost_cluster(error)


class SpeedLog:
    """Every `every_n_steps` global steps, one format_losses line (sec/step: this process's session.run time
    averaged since the last line; images_per_step: this process's batch). With max_number_of_steps, the line
    ends with format_progress at the recent rate: global steps per wall second since the previous line (for
    the first line, since the end of this process's WARMUP_STEPS-th step, or of its first when the line comes
    sooner), which counts other workers' steps and the time spent saving. The first line whose rate was measured
    wholly after those warm-up steps is followed by the expected duration. When FIRST_LINE_SECS pass after the
    warm-up steps without a line, the step then ending gets one (the next come at the multiples as before).
    It also keeps the run's totals for the end-of-run summary."""

    def __init__(self, every_n_steps, images_per_step, max_number_of_steps=None, clock=time.time):
        self.cadence = Cadence(every_steps=every_n_steps)
        self.images_per_step, self.max_number_of_steps, self.clock = images_per_step, max_number_of_steps, clock
        self.timed_steps, self.timed_secs = 0, 0.0
        self.window = None               # (global step, time) where the rate's window starts
        self.window_after_warmup = False  # the window starts after this process's WARMUP_STEPS steps
        self.start_time, self.start_step = None, None  # when this process's first step started, and from which
        self.steps_run, self.last = 0, None  # steps this process ran; the last one's (step, losses, rate)
        self.duration_said, self.lines_logged = False, 0

    def _slow_first_line_due(self, now):
        return (self.cadence.every_steps > 0 and self.lines_logged == 0 and self.steps_run > WARMUP_STEPS
                and now - self.start_time >= FIRST_LINE_SECS)

    def record(self, step, elapsed, losses, learning_rate, note=''):
        """note: appended to the line after ' | ' when not empty (the bad samples skipped so far)."""
        now = self.clock()
        if self.start_time is None:
            self.start_time = now - elapsed
            # TrainStep starts the cadence at the global step it found; else this step was the first.
            self.start_step = self.cadence.last_step if self.cadence.last_step is not None else step - 1
        self.steps_run += 1
        self.last = (step, losses, learning_rate)
        self.timed_steps += 1
        self.timed_secs += elapsed
        if self.cadence.due(step) or self._slow_first_line_due(now):
            self.lines_logged += 1
            sec_per_step = self.timed_secs / self.timed_steps
            parts = [format_losses(step, losses, learning_rate, sec_per_step, self.images_per_step)]
            if self.max_number_of_steps:
                secs_per_global_step = self._secs_per_global_step(step, now, sec_per_step)
                parts.append(format_progress(step, self.max_number_of_steps, secs_per_global_step))
            logging.info(' | '.join(parts + ([note] if note else [])))
            if self.max_number_of_steps and not self.duration_said and self.window_after_warmup:
                logging.info('%s', self.expected_duration(step, now, secs_per_global_step))
                self.duration_said = True
            self.timed_steps, self.timed_secs = 0, 0.0
            self.cadence.mark(step)
            self._start_window(step, now)
        elif self.window is None or self.steps_run == WARMUP_STEPS:
            self._start_window(step, now)

    def _start_window(self, step, now):
        self.window, self.window_after_warmup = (step, now), self.steps_run >= WARMUP_STEPS

    def _secs_per_global_step(self, step, now, sec_per_step):
        """Wall seconds per global step since the window's start; this process's sec/step before it has one."""
        if self.window is not None and step > self.window[0] and now > self.window[1]:
            return (now - self.window[1]) / (step - self.window[0])
        return sec_per_step

    def expected_duration(self, step, now, secs_per_global_step):
        """'Expected duration of this run: about 21 min (3000 steps from step 0, at 0.421 s a step from now on),
        ending about 14:52': the time so far plus the steps left at the recent rate."""
        total = (now - self.start_time) + max(0, self.max_number_of_steps - step) * secs_per_global_step
        end = time.strftime('%H:%M', time.localtime(self.start_time + total))
        steps = self.max_number_of_steps - self.start_step
        return (f'Expected duration of this run: about {format_duration(total)} ({steps} steps from step '
                f'{self.start_step}, at {secs_per_global_step:.3f} s a step from now on), ending about {end}')

    def totals(self):
        """One sentence for the end-of-run summary: steps run, wall time, images/s, the final losses."""
        if not self.steps_run:
            return 'This process ran no step.'
        wall = max(self.clock() - self.start_time, 1e-9)
        step, losses, learning_rate = self.last
        return (f'This process ran {self.steps_run} step(s), from global step {self.start_step} to {step}, in '
                f'{format_duration(wall)} ({self.steps_run * self.images_per_step / wall:.1f} images/s); final '
                f'{format_loss_values(losses, learning_rate)}.')


class CheckpointPolicy:
    """The chief's checkpoints: every interval_secs and/or every_n_steps, between two steps, weights checked
    finite first (weights_finite: train_tools.weights_finite_op, or None)."""

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
    the step's summary_writer (slim.learning.train passes it in train_step_kwargs); at the end of the run, the
    last step's scalars (write_last_scalars)."""

    def __init__(self, summary_op, interval_secs=600, clock=time.time):
        self.summary_op = summary_op
        self.cadence = Cadence(interval_secs, clock=clock, due_at_first=True)
        self.last_step = None

    def write(self, train_step_kwargs, summary, step):
        writer = train_step_kwargs.get('summary_writer')
        if writer is not None:
            writer.add_summary(summary, step)
        self.cadence.mark()
        self.last_step = step

    def write_last_scalars(self, train_step_kwargs, step, losses, learning_rate):
        """The last step's losses and learning rate, as fetched for its log line, so that TensorBoard's curves
        reach the final checkpoint rather than stop at the last due summary (up to interval_secs earlier). The
        input images wait for a due summary: they would take another batch."""
        if self.cadence.every_secs <= 0 or step == self.last_step:
            return
        values = [Summary.Value(tag=LOSS_TAG_PREFIX + name, simple_value=float(value))
                  for name, value in sorted(losses.items())]
        values.append(Summary.Value(tag=LEARNING_RATE_TAG, simple_value=float(learning_rate)))
        self.write(train_step_kwargs, Summary(value=values), step)


class ResumingEventWriter(tf.summary.FileWriter):
    """A FileWriter whose START session log goes one step after the step it is given.

    On reading a START at step S, TensorBoard drops every point of steps >= S written before it: what a run that
    died wrote past its last checkpoint, which the resumed run computes again. slim's supervisor logs START at the
    step the run resumes from, N, which would also drop the points at N itself: those of the stopped run's
    last step, written with the checkpoint it saved there (SummaryPolicy.write_last_scalars), whose curve would
    then end up to a summary interval early. Logged at N + 1, START still drops everything after the checkpoint.
    """

    def add_session_log(self, session_log, global_step=None):
        if session_log.status == SessionLog.START and global_step is not None:
            global_step += 1
        super().add_session_log(session_log, global_step)


STARTUP_CHECK_HINT = 'the record check at start-up names a damaged shard'


class DatasetWatch:
    """Notices a conversion into the records folder while the run reads it (dataset_info.json goes in last):
    records of other classes, or of the same in another order (a product added, labels.txt reordered), would
    from the next epoch on train the network's class scores on other classes' boxes, and labels past its
    classes would train none. More images of the same classes are fine: the run's shards are read anew each
    epoch (a new shard, after a restart), unless images_cached (the decoded images of the first epoch stay in
    memory): then a warning says that a restart reads them. The first check reads the file whatever its stamp: a
    conversion may have ended between the run's reading of the class list and the watch's start (the record
    check and the anchor fit take minutes on a large split). When reading the records fails, check_records (a
    callable raising datasets/record_check's UserError for a damaged shard; None or False: --nocheck_records)
    names the shard."""

    def __init__(self, dataset_dir, class_names, check_records=None, images_cached=False):
        self.path = os.path.join(dataset_dir, ds_info.INFO_FILENAME)
        self.class_names, self.seen = tuple(class_names), None
        self.check_records, self.images_cached = check_records, images_cached

    def damaged_shard(self):
        """What the record check says of the shards after a read failed: its line naming the damaged shard, that
        they read sound now, or (no check given, or one that failed otherwise) where to look."""
        if not self.check_records:
            return STARTUP_CHECK_HINT
        logging.info('Reading the training records failed: checking every shard')
        try:
            self.check_records()
        except UserError as err:
            return str(err)
        except Exception:   # a shard vanishing mid-check, say: a diagnosis never hides the error it explains
            return STARTUP_CHECK_HINT
        return 'every shard reads sound now'

    def _stamp(self):
        try:
            stat = os.stat(self.path)
        except OSError:   # none (SSD-Tensorflow's records), or a conversion's moment between two files
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def problem(self):
        """None, or the line saying the records' classes changed; reads the file only when it changed."""
        stamp = self._stamp()
        if stamp is None or stamp == self.seen:
            return None
        first, self.seen = self.seen is None, stamp
        try:
            names = tuple(ds_info.load_dataset_info(self.path).class_names)
        except UserError:
            return None
        if names == self.class_names:
            if self.images_cached and not first:
                logging.warning('%s changed since this run read it (the same classes): this run trains on the '
                                'images it keeps in memory (see the start-up report\'s "decoded images" line); to '
                                'train on the new records, stop it with Ctrl-C and run the same command', self.path)
            return None
        if names[:len(self.class_names)] == self.class_names:   # classes appended: the labels it has keep theirs
            harm = 'boxes of classes the network has no score for would reach it as objects of no class'
        else:
            harm = 'the network would train its class scores on other classes\' boxes'
        return (f'{self.path} changed since this run read it: the records now hold the classes '
                f'{", ".join(names[1:])}, not those it started with ({", ".join(self.class_names[1:])}), and {harm}')


class LossJumpWatch:
    """Warns once when the total loss rises over `factor` times this process's first step's: updates too large
    for the weights, not yet NaN (check_losses_finite ends the run then). From scratch at depth 0.125, momentum at
    0.01 went 38, 330, 7.6e8, then NaN; Adam without a warm-up at full width 25, 3440, 21 (bench/RESULTS.md)."""

    def __init__(self, factor=100.0):
        self.factor, self.first, self.warned = factor, None, False

    def record(self, step, loss):
        if self.first is None:
            self.first = (step, loss)
            return
        first_step, first_loss = self.first
        if self.warned or loss < self.factor * first_loss:
            return
        self.warned = True
        logging.warning('step %d: loss %.4g, %.0f times step %d\'s %.4g: the updates are too large for these weights. '
                        'If the loss does not come back down within a few steps, stop and start again from an earlier '
                        'checkpoint or a new --train_dir with a lower --learning_rate (from scratch, --warmup_steps=50 '
                        'ramps the rate up)', step, loss, loss / first_loss, first_step, first_loss)


def check_losses_finite(step, losses, train_dir):
    """TrainingDiverged when a loss value is NaN or infinite: the loop ends without saving."""
    if not all(math.isfinite(float(v)) for v in losses.values()):
        parts = ', '.join(f'{name} {float(value):g}' for name, value in sorted(losses.items()))
        raise TrainingDiverged(f'step {step}: the loss is not finite ({parts}); training stopped without saving, '
                               f'so the last checkpoint in {train_dir} is the last good one. Lower --learning_rate '
                               f'(or add --warmup_steps) and resume')
