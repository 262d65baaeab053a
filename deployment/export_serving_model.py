"""Export a trained SSD as a versioned TF Serving SavedModel: encoded image bytes in, boxes out.

    python deployment/export_serving_model.py --checkpoint_path=ckpt/fine_tuning --output_dir=model/commodity

Writes model/commodity/<version>/ (next free integer, or --model_version), complete or not at all.
Signatures and outputs: see deployment/serving_model.py. The model configuration is read from
model_config.json beside the checkpoint; --model_name, --num_classes, --depth_multiplier, --anchor_set
override it.
"""
import os
import sys

# Run as a script from the repository root: make the repository's packages importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils import script_setup  # noqa: E402  (first: sets TensorFlow's log level before it loads)
from absl import flags  # noqa: E402

from deployment import serving_model  # noqa: E402
from utils import inference_flags  # noqa: E402
from utils.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string('output_dir', None, 'Model base directory; the SavedModel goes to <output_dir>/<version>.')
flags.DEFINE_integer('model_version', None, 'Version number (default: one more than the largest there).')
# Post-processing baked into the graph.
inference_flags.define_postprocess_flags()
inference_flags.define_model_flags('NHWC', 'Layout of the exported graph: NHWC runs on any device; NCHW '
                                   'only where a GPU serves it.')


def export():
    """Writes the SavedModel version directory and prints its path."""
    if FLAGS.model_version is not None and FLAGS.model_version < 1:
        raise UserError(f'--model_version must be a positive integer, got {FLAGS.model_version}')
    path = serving_model.export(FLAGS.checkpoint_path, FLAGS.output_dir, inference_flags.model_overrides(FLAGS),
                                FLAGS.data_format, inference_flags.postprocess_options(FLAGS), FLAGS.model_version,
                                use_moving_averages=inference_flags.use_moving_averages(FLAGS))
    print('SavedModel written to %s' % path)


if __name__ == '__main__':
    script_setup.run_main(export, required_flags=('checkpoint_path', 'output_dir'))
