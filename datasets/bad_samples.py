"""Samples that cannot be decoded: skipped and counted by the input pipeline instead of ending the run.

A record whose image does not decode, whose Example is malformed or whose box fields differ in length
would otherwise fail the whole tf.data iterator at whatever step first draws it. The pipeline
(datasets/tfrecord_pipeline.py) turns every record into exactly one element with a status (first_that_works),
counts the bad ones in SampleCounters (local variables the training step and evaluation read) and drops
them; BadSampleMonitor, plain Python, warns on the first one and stops the run when too many are bad.
A shard that fails while it is read (removed or damaged during a run) still fails the iterator:
is_input_failure tells that error from others, error_line gives its one useful line.
"""
import tensorflow.compat.v1 as tf

from utils.errors import UserError

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


def _local_variable(name, initial_value):
    # Resource variables: tf.data functions can only capture those. Local: never saved in checkpoints.
    return tf.Variable(initial_value, name=name, trainable=False, use_resource=True,
                       collections=[tf.GraphKeys.LOCAL_VARIABLES])


class SampleCounters:
    """Records read and bad records, and a description of the last bad one ('<shard> record <i>: <reason>').

    Create it in the graph of the pipeline; a dataset that counts into it captures these variables, so read
    it with an initializable iterator, after running `initializer` (also in tf.local_variables_initializer)."""

    def __init__(self, name='input_samples'):
        with tf.name_scope(name):
            self.read = _local_variable('read', tf.constant(0, tf.int64))
            self.bad = _local_variable('bad', tf.constant(0, tf.int64))
            self.last_bad = _local_variable('last_bad', tf.constant(''))
        self.initializer = tf.group(self.read.initializer, self.bad.initializer, self.last_bad.initializer)
        self.values = {'read': self.read.read_value(), 'bad': self.bad.read_value(),
                       'last_bad': self.last_bad.read_value()}

    def count(self, status, shard, index):
        """Ops counting one record of `status` (from `shard`, record `index`); returns status after them."""
        is_bad = tf.not_equal(status, OK)

        def note_bad():
            where = tf.strings.join([shard, ' record ', tf.strings.as_string(index), ': ',
                                     tf.gather(tf.constant(REASONS), status)])
            return tf.group(self.bad.assign_add(1), self.last_bad.assign(where))
        updates = [self.read.assign_add(1), tf.cond(is_bad, note_bad, tf.no_op)]
        with tf.control_dependencies(updates):
            return tf.identity(status)


class BadSampleMonitor:
    """Reads the counters' values as the run goes: one warning for the first bad sample, and UserError once
    more than max_fraction of the samples are bad. The fraction is taken over at least split_size samples,
    so one bad record early in the first epoch does not stop a run; a bad record is counted each epoch."""

    def __init__(self, max_fraction, split_size):
        self.max_fraction, self.split_size = max_fraction, max(int(split_size), 1)
        self.read = self.bad = 0
        self.last_bad = ''

    def update(self, read, bad, last_bad):
        """New counter values -> the warning to log (the first bad sample), else None; UserError over the limit."""
        first = self.bad == 0 and bad > 0
        self.read, self.bad = int(read), int(bad)
        self.last_bad = last_bad.decode('utf-8', 'replace') if isinstance(last_bad, bytes) else str(last_bad)
        if self.bad > self.max_fraction * max(self.read, self.split_size):
            raise UserError(f'{self.bad} of the {self.read} samples read could not be decoded, more than '
                            f'{self.max_fraction:g} of them (the last: {self.last_bad}); repair or rebuild the '
                            f'records (README section 2) rather than train on what is left')
        if first:
            return f'skipping a sample that cannot be decoded ({self.last_bad}); bad samples are counted'
        return None

    def summary(self):
        """'N bad sample(s) skipped of M read', for the periodic log and the end-of-run summary."""
        return f'{self.bad} bad sample(s) skipped of {self.read} read'


def is_input_failure(error):
    """True for a tf.errors.OpError raised by an input pipeline's iterator (not by the model or optimizer)."""
    op = getattr(error, 'op', None)
    return op is not None and op.type in ('IteratorGetNext', 'IteratorGetNextSync')


def error_line(error):
    """The line of a tf.errors.OpError that says what went wrong, without the graph-execution preamble, the
    traceback of where the node was defined and the node annotations."""
    lines = [line.strip() for line in error.message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(('[[', 'Graph execution error', 'Detected at',
                                                                      'File "', 'Node:'))]
    return useful[-1] if useful else lines[0]
