"""Export a trained SSD as a versioned TF Serving SavedModel: encoded image bytes in, boxes out.

    python deployment/export_serving_model.py --checkpoint_path=ckpt/fine_tuning --output_dir=model/commodity

(or python -m deployment.export_serving_model ...). Writes model/commodity/<version>/ (next free integer, or
--model_version), complete or not at all. Signatures and outputs: see deployment/serving_model.py. The model
configuration is read from model_config.json beside the checkpoint; --model_name, --num_classes,
--depth_multiplier, --anchor_set override it.
"""
import os
import sys

if not __package__:  # run by path (python deployment/export_serving_model.py): the packages are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import script_setup  # noqa: E402  (first: sets TensorFlow's log level before it loads)
from absl import flags  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from deployment import serving_model  # noqa: E402
from nets import nets_factory  # noqa: E402
from utils import checkpoints, inference_flags  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.file_io import check_writable_folder  # noqa: E402

flags.DEFINE_string('output_dir', None, 'Model base directory; the SavedModel goes to <output_dir>/<version>.')
flags.DEFINE_integer('model_version', None, 'Version number (default: one more than the largest there).')
# Post-processing baked into the graph.
inference_flags.define_postprocess_flags()
inference_flags.define_model_flags('NHWC', 'Layout of the exported graph: NHWC runs on any device; NCHW '
                                   'only where a GPU serves it.')
flags.adopt_module_key_flags(inference_flags)   # --help lists them with this script's own


def main(fv):
    """Writes the SavedModel version directory and prints its path."""
    # TensorFlow's own notices (the builder names the temporary directory it writes in) are not the user's.
    tf.logging.set_verbosity(tf.logging.WARN)
    if fv.model_version is not None and fv.model_version < 1:
        raise UserError(f'--model_version must be a positive integer, got {fv.model_version}')
    check_writable_folder(fv.output_dir, '--output_dir')
    prefix = checkpoints.require_checkpoint(fv.checkpoint_path)
    # The graph is only written here, so NCHW needs no GPU on this machine.
    data_format = nets_factory.resolve_data_format(fv.data_format, use_gpus=True)
    config = inference_flags.model_config(fv, prefix, data_format)
    path = serving_model.export(prefix, config, fv.output_dir, inference_flags.postprocess_options(fv),
                                fv.model_version, inference_flags.use_moving_averages(fv))
    print('SavedModel written to %s' % path)


if __name__ == '__main__':
    script_setup.run_main(main, flags.FLAGS, required_flags=('checkpoint_path', 'output_dir'))
