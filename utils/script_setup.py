"""The one skeleton of every command-line tool (training, evaluation, detection, export, conversion, demo data).

Every script imports this module before TensorFlow: importing sets TensorFlow's C++ log level and oneDNN
switch (read when TensorFlow loads) unless the environment already sets them, then loads TensorFlow without
its start-up notices. run_main then parses the flags and turns the failures a user can fix into one line and
an exit status.
"""
import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# The tools print class names in any script ('可乐'): a redirect on Windows (cp1252) or under the C locale
# would fail on them, after the work. stdout's JSON lines and tables and stderr's messages are UTF-8 always.
for _stream in (sys.stdout, sys.stderr):
    if hasattr(_stream, 'reconfigure') and (_stream.encoding or '').lower().replace('-', '') != 'utf8':
        _stream.reconfigure(encoding='utf-8')


def program_name():
    return os.path.basename(sys.argv[0])


def _stopped_without_traceback(kind, value, traceback):
    """Ctrl-C before run_main's handling starts (TensorFlow's import takes seconds): '<script>: stopped', as
    after it, not a traceback from inside the import. Python still ends the process by SIGINT (status 130)."""
    if issubclass(kind, KeyboardInterrupt):
        print(f'{program_name()}: stopped', file=sys.stderr)
    else:
        _previous_excepthook(kind, value, traceback)


_previous_excepthook, sys.excepthook = sys.excepthook, _stopped_without_traceback
# tf-slim's layers call a deprecated Keras API on every build: noise for users, nothing they can act on.
warnings.filterwarnings('ignore', message='`layer.apply` is deprecated')

# What TensorFlow's C++ libraries print while they load, whatever TF_CPP_MIN_LOG_LEVEL says: absl's
# "before InitializeLog" warning, then the oneDNN and CPU-feature notices (once per library that logs).
_START_UP_NOISE = re.compile(r'^WARNING: All log messages before absl::InitializeLog\(\) is called'
                             r'|^[IW]\d{4} [\d:. ]+\d+ (port|cpu_feature_guard)\.cc:\d+\] ')


def _show_tensorflow_notices():
    """True when the user asked for TensorFlow's info or warnings: TF_CPP_MIN_LOG_LEVEL=0 or 1."""
    return os.environ['TF_CPP_MIN_LOG_LEVEL'].strip() in ('0', '1')


@contextlib.contextmanager
def stderr_without(noise):
    """Holds stderr (fd 2, where C++ writes) in a file while the block runs, then passes on every line of it
    but those the compiled regex `noise` finds, so a real error still shows. Nothing is dropped when the user
    asked for TensorFlow's notices (TF_CPP_MIN_LOG_LEVEL=0 or 1)."""
    if _show_tensorflow_notices():
        yield
        return
    sys.stderr.flush()
    real_stderr = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(real_stderr, 2)
            os.close(real_stderr)
            held.seek(0)
            for line in held.read().decode(errors='replace').splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)


def _import_tensorflow_quietly():
    """Import TensorFlow without its start-up notices (stderr_without)."""
    if 'tensorflow' in sys.modules:
        return
    with stderr_without(_START_UP_NOISE):
        import tensorflow  # noqa: F401


class _NoDeprecationNotices(logging.Filter):
    """Drops TensorFlow's 'X is deprecated ... Instructions for updating' notices (raised by TF-Slim and
    the v1 API inside this code, not by anything a user does)."""

    def filter(self, record):
        return 'Instructions for updating' not in record.getMessage()


class PlainLogFormat(logging.Formatter):
    """'07:20:25 step 10: loss ...': every tool's log lines, its own and TensorFlow's, as a time and the message.
    A warning or error says so ('warning: ...') unless its message already does. absl's prefix (level, date,
    microseconds, thread id, file:line) and TensorFlow's 'INFO:tensorflow:' are for developers."""

    def __init__(self):
        super().__init__('%(asctime)s %(message)s', '%H:%M:%S')

    def formatMessage(self, record):
        if record.levelno >= logging.WARNING:
            label = 'warning: ' if record.levelno < logging.ERROR else 'error: '
            if not record.message.startswith(label):
                record.message = label + record.message
        return super().formatMessage(record)


def use_plain_log_format():
    """absl's handler and TensorFlow's own write PlainLogFormat lines. TensorFlow's info lines (tf-slim's
    'Starting Session.', 'global_step/sec: 0', the Saver's 'Restoring parameters from ...') repeat what the
    tools say themselves, so only its warnings and errors show, unless TF_CPP_MIN_LOG_LEVEL is 0 or 1."""
    log_format = PlainLogFormat()
    absl_logging.get_absl_handler().setFormatter(log_format)
    tensorflow_logger = logging.getLogger('tensorflow')
    for handler in tensorflow_logger.handlers:
        handler.setFormatter(log_format)
    if not _show_tensorflow_notices():
        tensorflow_logger.setLevel(logging.WARNING)


_import_tensorflow_quietly()
if not _show_tensorflow_notices():
    logging.getLogger('tensorflow').addFilter(_NoDeprecationNotices())

from absl import app  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from utils.errors import UserError  # noqa: E402


def print_error(message):
    """'<script>: error: <message>' on stderr: how every tool reports a problem the user can fix."""
    print(f'{program_name()}: error: {message}', file=sys.stderr)


def exit_now(status):
    """Flush and end the process without waiting for threads stuck in TensorFlow."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


NO_SPACE = 'No space left on device'   # strerror(ENOSPC), in OSError's and TensorFlow's messages alike


def report_full_disk_once():
    """A full disk fails TensorFlow's writer threads too (the event file's): their tracebacks are left out, as the
    main thread meets the same error and run_main says it in one line. Other thread errors print as before."""
    default_hook = threading.excepthook

    def hook(args):
        if NO_SPACE not in str(args.exc_value):
            default_hook(args)
    threading.excepthook = hook


def run_main(main_fn, flag_values, required_flags=(), graph_mode=True):
    """Runs main_fn(flag_values) under absl (flags parsed); its return value (None = 0) is the exit status.

    Positional arguments, a missing flag of `required_flags` or a UserError raised by main_fn print one
    print_error line and exit 1, as does a full disk; Ctrl-C prints '<script>: stopped' and exits 130.
    graph_mode: TensorFlow's v1 graph mode (tf.compat.v1), which every tool but the demo-data generator needs.
    Log lines take PlainLogFormat; TensorFlow's start-up, deprecation and info notices are left out unless
    TF_CPP_MIN_LOG_LEVEL is 0 or 1.
    """
    def main(argv):
        use_plain_log_format()
        report_full_disk_once()
        try:
            if len(argv) > 1:
                raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
            for name in required_flags:
                if not flag_values[name].value:
                    raise UserError(f'--{name} is required')
            return main_fn(flag_values) or 0
        except UserError as err:
            print_error(err)
            return 1
        except KeyboardInterrupt:
            print(f'{program_name()}: stopped', file=sys.stderr)
            return 130
        except Exception as err:   # a full disk, met by whichever writer (event file, checkpoint, shard) came first
            if NO_SPACE not in str(err):
                raise
            print_error(UserError(f'{str(err).splitlines()[0]}: free some space and run the same command again (files '
                                  f'are replaced only when complete: the last checkpoint or records are intact)'))
            return 1

    if graph_mode:
        import tensorflow.compat.v1 as tf
        tf.disable_v2_behavior()
    # TensorFlow's logger has its own handler; passed on to absl's root handler too, each line would repeat.
    logging.getLogger('tensorflow').propagate = False
    app.run(main)
