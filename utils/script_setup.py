"""Start-up shared by the top-level scripts.

Every script imports it before TensorFlow: importing sets TensorFlow's C++ log level and oneDNN switch
(read when TensorFlow loads) unless the environment already sets them. run_main then runs the main of
the inference scripts (eval_ssd_network.py, detect.py, export_serving_model.py); train_ssd_network.py
keeps its own main, which also handles the cluster roles and its Ctrl-C checkpoint.
"""
import os
import sys
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# tf-slim's layers call a deprecated Keras API on every build: noise for users, nothing they can act on.
warnings.filterwarnings('ignore', message='`layer.apply` is deprecated')

from absl import app, flags  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from utils.errors import UserError  # noqa: E402


def run_main(main_fn, required_flags=()):
    """Runs main_fn() under absl (flags parsed) in graph mode.

    A missing flag of `required_flags` or a UserError raised by main_fn prints '<script>: error: <message>'
    to stderr and exits 1; Ctrl-C prints 'Stopped.' and exits 130.
    """
    def main(argv):
        if len(argv) > 1:
            raise app.UsageError('unexpected arguments: %s' % ' '.join(argv[1:]))
        try:
            for name in required_flags:
                if not flags.FLAGS[name].value:
                    raise UserError(f'--{name} is required')
            main_fn()
        except UserError as err:
            print('%s: error: %s' % (os.path.basename(sys.argv[0]), err), file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print('Stopped.', file=sys.stderr)
            sys.exit(130)

    tf.get_logger().setLevel('ERROR')   # the v1 API's deprecation notices; the scripts print their progress
    tf.disable_v2_behavior()
    app.run(main)
