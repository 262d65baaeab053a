"""Ctrl-C / SIGTERM during training: the first asks the loop to stop after the step in progress (a checkpoint is
saved), the second ends the process at once."""
import os
import signal
import threading
import time

from absl import logging

# A second signal this soon after the first is the same request delivered twice, not a second press: GNU
# timeout (timeout -s INT 60 python train_ssd_network.py ...) signals its command and then the command's
# whole process group, so the command gets two at once.
SAME_REQUEST_SECS = 1.0


class StopRequest:
    """The first SIGINT / SIGTERM asks the loop to stop after the step in progress (a checkpoint is
    saved); a second one, SAME_REQUEST_SECS or more later, ends the process at once, by that signal.

    Python runs signal handlers in the main thread only between bytecodes, not during a long
    session.run; `run(fn)` therefore runs the training in a worker thread while the main thread waits,
    so both signals take effect immediately.
    """

    def __init__(self):
        self.signal_name = None
        self._signals = ()
        self._first_signal_time = None
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
        name, now = signal.Signals(signum).name, time.monotonic()
        if self._first_signal_time is None:
            self.signal_name, self._first_signal_time = name, now
            logging.warning('%s received: saving a checkpoint after the step in progress, then exiting '
                            '(send it again to quit at once without saving)', name)
        elif now - self._first_signal_time >= SAME_REQUEST_SECS:
            logging.warning('%s received again: quitting at once without saving', name)
            for other in self._signals:
                signal.signal(other, signal.SIG_DFL)
            os.kill(os.getpid(), signum)   # the default action: the process ends by this signal
