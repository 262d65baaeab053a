"""Samples that cannot be decoded: skipped and counted by the input pipeline instead of ending the run.

A record whose image does not decode, whose Example is malformed or whose box fields differ in length
would otherwise fail the whole tf.data iterator at whatever step first draws it. The pipeline
(datasets/tfrecord_pipeline.py) turns every record into exactly one element with a status (first_that_works).
Training drops the bad ones, each good sample carrying how many were dropped before it (drop_bad), so the
step that consumes a batch knows exactly how many it passed over; BadSampleMonitor, plain Python, adds them
up, warns on the first one and stops the run when too many are bad. Evaluation keeps every record, flagged
(flag_bad), so that it can report them and count the ground truth of those whose annotations were read.
A shard that fails while it is read (removed or damaged during a run) still fails the iterator:
is_input_failure tells that error from others, error_line gives its one useful line.
"""
import re

import tensorflow.compat.v1 as tf
from absl import logging

OK, BAD_IMAGE, BAD_RECORD = 0, 1, 2
REASONS = ('', 'the image does not decode', 'malformed record (Example or box fields)')


def first_that_works(value, attempts):
    """A one-element dataset: the output of the first function of `attempts` that runs on `value` without
    an error (all must return the same structure; the last should not fail). Each attempt runs in its own
    dataset, so an error is dropped there and nowhere else: a damaged shard still fails the reader."""
    tried = None
    for attempt in attempts:
        dataset = tf.data.Dataset.from_tensors(value).map(attempt).ignore_errors()
        tried = dataset if tried is None else tried.concatenate(dataset)
    return tried.take(1)


def describe(example):
    """'<shard> record <index>: <reason>' of an element of first_that_works' stream (a string tensor)."""
    return tf.strings.join([example['shard'], ' record ', tf.strings.as_string(example['index']), ': ',
                            tf.gather(tf.constant(REASONS), example['status'])])


def drop_bad(examples):
    """Training: the good elements only, each with 'skipped_before' (int64: bad records dropped since the
    previous good one) and 'bad_record' (the last of them described, or ''). Summed over the samples a step
    consumed, these count exactly the bad records the run has passed over, whatever is read ahead."""
    def count(state, example):
        pending, last = state
        is_bad = tf.not_equal(example['status'], OK)
        state = (tf.where(is_bad, pending + 1, tf.zeros_like(pending)),
                 tf.where(is_bad, describe(example), tf.constant('')))
        return state, dict(example, skipped_before=pending, bad_record=last)
    counted = examples.scan((tf.constant(0, tf.int64), tf.constant('')), count)
    return counted.filter(lambda example: tf.equal(example['status'], OK))


def flag_bad(example):
    """Evaluation keeps every record: 'skipped_before' 0, 'bad_record' this record's description if it is bad."""
    return dict(example, skipped_before=tf.constant(0, tf.int64),
                bad_record=tf.where(tf.equal(example['status'], OK), tf.constant(''), describe(example)))


class BadSampleMonitor:
    """Adds up the bad samples as the run goes: one warning for the first bad sample, and a stop once more
    than max_fraction of the samples are bad. The fraction is taken over at least split_size samples, so one
    bad record early in the first epoch does not stop a run; a bad record is counted each epoch.
    fetches: batch_fetches(batch), which the training step fetches with each step for check()."""

    def __init__(self, max_fraction, split_size, fetches=None):
        self.max_fraction, self.split_size = max_fraction, max(int(split_size), 1)
        self.fetches = fetches
        self.read = self.bad = 0
        self.last_bad = ''

    @staticmethod
    def batch_fetches(batch):
        """What check() needs of a training batch (fetched with the step that consumes it)."""
        return {'skipped_before': batch['skipped_before'], 'bad_record': batch['bad_record']}

    def update(self, read, bad, last_bad):
        """New counter values -> the warning to log (the first bad sample), else None."""
        first = self.bad == 0 and bad > 0
        self.read, self.bad = int(read), int(bad)
        self.last_bad = last_bad.decode('utf-8', 'replace') if isinstance(last_bad, bytes) else str(last_bad)
        return f'skipping a sample that cannot be decoded ({self.last_bad}); bad samples are counted' if first else None

    def over_limit(self):
        """The one-line error when more than max_fraction of the samples are bad, else None."""
        if self.bad <= self.max_fraction * max(self.read, self.split_size):
            return None
        return (f'{self.bad} of the {self.read} samples read could not be decoded, more than {self.max_fraction:g} '
                f'of them (the last: {self.last_bad}); repair or rebuild the records (README section 2) rather than '
                f'train on what is left')

    def check(self, values):
        """update() with the batch_fetches values of the step's batch, logging its warning; returns over_limit()."""
        skipped = int(values['skipped_before'].sum())
        described = [name for name in values['bad_record'] if name]
        warning = self.update(self.read + len(values['skipped_before']) + skipped, self.bad + skipped,
                              described[-1] if described else self.last_bad)
        if warning:
            logging.warning(warning)
        return self.over_limit()

    def summary(self):
        """'N bad sample(s) skipped of M read', for the end-of-run summary."""
        return f'{self.bad} bad sample(s) skipped of {self.read} read'

    def note(self):
        """summary() once a sample was bad, else '': for the periodic log line."""
        return self.summary() if self.bad else ''


def is_input_failure(error):
    """True for a tf.errors.OpError raised by an input pipeline's iterator (not by the model or optimizer)."""
    op = getattr(error, 'op', None)
    return op is not None and op.type in ('IteratorGetNext', 'IteratorGetNextSync')


# What TensorFlow adds around the errors of several ops (several clones reading one batch, say): a count, then
# "  (0) DATA_LOSS: <message>" per root error, then counts of operations and derived errors.
_ERROR_SUMMARY = re.compile(r'\d+ (root error\(s\) found|successful operations|derived errors ignored)\.?')
_ROOT_ERROR = re.compile(r'\(\d+\) [A-Z_]+: (.*)')


def error_line(error):
    """The line of a tf.errors.OpError that says what went wrong (the first root error's, when there are several),
    without the graph-execution preamble, the traceback of where the node was defined and the node annotations."""
    lines = [line.strip() for line in error.message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(('[[', 'Graph execution error', 'Detected at',
                                                                      'File "', 'Node:'))
              and not _ERROR_SUMMARY.fullmatch(line)]
    roots = [found.group(1) for found in map(_ROOT_ERROR.fullmatch, useful) if found]
    return roots[0] if roots else useful[-1] if useful else lines[0]


def input_failure_message(error, step, diagnosis):
    """The one line for an input-pipeline failure (is_input_failure) at the last completed global step;
    diagnosis: what the record check says of the shards (the line naming the damaged one, say)."""
    return f'step {step}: reading the training records failed ({error_line(error)}); {diagnosis}'
