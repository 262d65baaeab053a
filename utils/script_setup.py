"""The one skeleton of every command-line tool (training, evaluation, detection, export, conversion, demo data).

Every script imports this module before TensorFlow: importing sets TensorFlow's C++ log level and oneDNN
switch (read when TensorFlow loads) unless the environment already sets them. run_main then parses the flags and turns the failures a user can fix into one line and an exit status.
"""
import os
import sys
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# tf-slim's layers call a deprecated Keras API on every build: noise for users, nothing they can act on.
warnings.filterwarnings('ignore', message='`layer.apply` is deprecated')

from absl import app  # noqa: E402

from utils.errors import UserError  # noqa: E402


def program_name():
    return os.path.basename(sys.argv[0])


def print_error(message):
    """'<script>: error: <message>' on stderr: how every tool reports a problem the user can fix."""
    print(f'{program_name()}: error: {message}', file=sys.stderr)


def exit_now(status):
    """Flush and end the process without waiting for threads stuck in TensorFlow."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_main(main_fn, flag_values, required_flags=(), graph_mode=True):
    """Runs main_fn(flag_values) under absl (flags parsed); its return value (None = 0) is the exit status.

    Positional arguments, a missing flag of `required_flags` or a UserError raised by main_fn print one
    print_error line and exit 1; Ctrl-C prints '<script>: stopped' and exits 130. graph_mode: TensorFlow's
    v1 graph mode (tf.compat.v1), which every tool but the demo-data generator needs.
    """
    def main(argv):
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

    if graph_mode:
        import tensorflow.compat.v1 as tf
        quiet = tf.get_logger().level
        tf.get_logger().setLevel('ERROR')   # the v1 API's deprecation notices are not for users
        tf.disable_v2_behavior()
        tf.get_logger().setLevel(quiet)
    app.run(main)
