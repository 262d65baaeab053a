"""Export a trained SSD as a TFLite model for devices: network and detection post-processing in one file.

    python deployment/export_tflite.py --checkpoint_path=ckpt/fine_tuning --output_file=model.tflite \\
        [--quantize=float16 | --quantize=int8 --dataset_dir=IMAGE/tfrecords]

(or python -m deployment.export_tflite ...). Writes the .tflite file and, beside it, the class names
(model.labels.txt, line 1 = background). The post-processing is TFLite's built-in TFLite_Detection_PostProcess,
so the standard runtime runs the model (python detect.py --model=model.tflite ...); inputs and outputs: see
deployment/tflite_model.py. --quantize=int8 calibrates on images of the --calibration_split records of
--dataset_dir. The model configuration is read from model_config.json beside the checkpoint; --model_name,
--num_classes, --depth_multiplier, --anchor_set override it.
"""
import os
import re
import sys

if not __package__:  # run by path (python deployment/export_tflite.py): the packages are one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import script_setup  # noqa: E402  (first: sets TensorFlow's log level before it loads)
from absl import flags  # noqa: E402

from datasets import dataset_info  # noqa: E402
from deployment import tflite_model  # noqa: E402
from utils import checkpoints, inference_flags, tflite_detector  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.file_io import check_writable_file, write_bytes_atomically, write_text_atomically  # noqa: E402

flags.DEFINE_string('output_file', None, 'The .tflite file to write; the class names go beside it '
                    '(<name>.labels.txt).')
flags.DEFINE_enum('quantize', 'none', tflite_model.QUANTIZE_CHOICES, 'none: float32; float16: float16 weights '
                  '(half the size); int8: int8 weights and activations, calibrated on --dataset_dir.')
flags.DEFINE_string('dataset_dir', None, 'TFRecords (as for training) whose images calibrate --quantize=int8.')
flags.DEFINE_string('calibration_split', 'train', 'Split of --dataset_dir used for calibration.')
flags.DEFINE_integer('num_calibration_images', 100, 'Images that calibrate --quantize=int8.')
# Post-processing baked into the model (TFLite_Detection_PostProcess's attributes).
inference_flags.define_postprocess_flags()
inference_flags.define_model_flags('NHWC', 'Layout of the exported model: TFLite runs NHWC only.')
flags.adopt_module_key_flags(inference_flags)   # --help lists them with this script's own

# The line the quantizer's C++ code prints for every int8 conversion: nothing a user acts on.
_CONVERTER_NOISE = re.compile(r'^fully_quantize: \d+, inference_type: ')


def check_flags(fv):
    """UserError for flags the TFLite model cannot honour or an int8 export without calibration data."""
    if fv.data_format != 'NHWC':
        raise UserError(f'--data_format={fv.data_format}: TFLite models are NHWC; leave it out')
    if fv['select_top_k'].present:
        raise UserError('--select_top_k: TFLite_Detection_PostProcess has no per-class top-k before NMS (every '
                        'anchor scoring above --select_threshold is a candidate); leave it out')
    if fv.quantize == 'int8' and not fv.dataset_dir:
        raise UserError('--quantize=int8 needs --dataset_dir: TFRecords whose images calibrate the activations')
    if fv.num_calibration_images < 1:
        raise UserError(f'--num_calibration_images={fv.num_calibration_images}: must be >= 1')
    check_writable_file(fv.output_file, '--output_file')


def calibration_images(fv, image_size):
    """The int8 calibration inputs; UserError when the split has no image that decodes."""
    images = tflite_model.record_inputs(dataset_info.list_shards(fv.dataset_dir, fv.calibration_split),
                                        image_size, fv.num_calibration_images)
    if not images:
        raise UserError(f'--dataset_dir={fv.dataset_dir}: split {fv.calibration_split!r} holds no image that '
                        f'decodes, nothing to calibrate on')
    return images


def main(fv):
    """Freezes the checkpoint, converts, writes the model and its class names, prints what was written."""
    check_flags(fv)
    prefix = checkpoints.require_checkpoint(fv.checkpoint_path)
    config = inference_flags.model_config(fv, prefix, 'NHWC')
    network = config.build_network()
    attributes = tflite_model.postprocess_attributes(config.num_classes, network.params.prior_scaling,
                                                     inference_flags.postprocess_options(fv))
    images = calibration_images(fv, config.image_size) if fv.quantize == 'int8' else None   # bad records: stop now
    graph_def = tflite_model.frozen_network(prefix, config, inference_flags.use_moving_averages(fv))
    module = tflite_model.DetectorModule(graph_def, network.anchors, attributes, config.image_size)
    with script_setup.stderr_without(_CONVERTER_NOISE):
        model = tflite_model.convert(module, fv.quantize, images)
    write_bytes_atomically(fv.output_file, model)
    write_text_atomically(tflite_detector.labels_path(fv.output_file), '\n'.join(config.class_names) + '\n')
    print('TFLite model written to %s (%.1f MB, %s); class names in %s' % (
        fv.output_file, len(model) / 1e6, 'float32' if fv.quantize == 'none' else fv.quantize,
        tflite_detector.labels_path(fv.output_file)))


if __name__ == '__main__':
    script_setup.run_main(main, flags.FLAGS, required_flags=('checkpoint_path', 'output_file'), graph_mode=False)
