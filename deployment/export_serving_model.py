"""Export a trained SSD as a versioned TF Serving SavedModel: encoded image bytes in, boxes out.

    python deployment/export_serving_model.py --checkpoint_path=ckpt/fine_tuning --output_dir=model/commodity

Writes model/commodity/<version>/ (next free integer, or --model_version), complete or not at all.
Signatures and outputs: see deployment/serving_model.py. The model configuration is read from
model_config.json beside the checkpoint; --model_name, --num_classes, --depth_multiplier, --anchor_set
override it.
"""
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# Run as a script from the repository root: make the repository's packages importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from deployment import inference_model, serving_model  # noqa: E402
from utils.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string('checkpoint_path', None, 'A checkpoint directory (newest checkpoint) or prefix.')
flags.DEFINE_string('output_dir', None, 'Model base directory; the SavedModel goes to <output_dir>/<version>.')
flags.DEFINE_integer('model_version', None, 'Version number (default: one more than the largest there).')
# Post-processing baked into the graph.
flags.DEFINE_float('select_threshold', 0.01, 'Minimum class score of a returned detection.')
flags.DEFINE_float('nms_threshold', 0.45, 'Per-class non-maximum suppression IoU.')
flags.DEFINE_integer('select_top_k', 400, 'Best anchors per class kept before NMS.')
flags.DEFINE_integer('keep_top_k', 200, 'Detections returned per image.')
# Model (overrides of model_config.json).
flags.DEFINE_string('model_name', None, 'ssd_300_vgg or ssd_512_vgg.')
flags.DEFINE_integer('num_classes', None, 'Classes including the background.')
flags.DEFINE_float('depth_multiplier', None, 'Channel multiplier the network was trained with.')
flags.DEFINE_string('anchor_set', None, 'ssd_tensorflow or caffe.')
flags.DEFINE_float('moving_average_decay', None, 'Set (any value) to use the moving averages of the weights that '
                  'training with --moving_average_decay kept, instead of the weights.')
flags.DEFINE_string('data_format', 'NHWC', 'Layout of the exported graph: NHWC runs on any device; NCHW '
                    'only where a GPU serves it.')


def main(argv):
    del argv
    try:
        for name in ('checkpoint_path', 'output_dir'):
            if not getattr(FLAGS, name):
                raise UserError(f'--{name} is required')
        if FLAGS.model_version is not None and FLAGS.model_version < 1:
            raise UserError(f'--model_version must be a positive integer, got {FLAGS.model_version}')
        overrides = {key: getattr(FLAGS, key) for key in inference_model.OVERRIDABLE_KEYS}
        detect_options = dict(score_threshold=FLAGS.select_threshold, nms_threshold=FLAGS.nms_threshold,
                              top_k=FLAGS.select_top_k, keep_top_k=FLAGS.keep_top_k)
        path = serving_model.export(FLAGS.checkpoint_path, FLAGS.output_dir, overrides, FLAGS.data_format,
                                    detect_options, FLAGS.model_version,
                                    use_moving_averages=FLAGS.moving_average_decay is not None)
    except UserError as err:
        print('export_serving_model.py: error: %s' % err, file=sys.stderr)
        sys.exit(1)
    print('SavedModel written to %s' % path)


if __name__ == '__main__':
    tf.get_logger().setLevel('ERROR')   # the v1 API's deprecation notices; progress is printed here
    tf.disable_v2_behavior()
    app.run(main)
