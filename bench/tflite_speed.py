"""Images/s at batch 1 of the exported models of one checkpoint: SavedModel (TF Serving export, run in-process),
TFLite float32, float16 and int8 (tf.lite.Interpreter, XNNPACK), with their sizes on disk.

    python -m bench.tflite_speed --checkpoint_path=ckpt/demo --dataset_dir=demo/tfrecords [--work_dir=/tmp/tflite_speed]

The models are written by the user commands (deployment/export_serving_model.py, deployment/export_tflite.py;
int8 calibrated on --dataset_dir's train split) into --work_dir. Every model runs the same --num_images images
of the test split, already resized to the network's input (the SavedModel's serving_uint8 signature gets them
as uint8, so its in-graph resize is the identity), after --warmup runs; each uses --num_threads threads.
The mAP column (VOC07, the whole test split, --map) is eval_ssd_network.py's: of the checkpoint for the
SavedModel (the same network and post-processing), of each file for the TFLite models (--model).
"""
import json
import os
import shutil
import subprocess
import sys
import time

from utils import script_setup  # first: sets TensorFlow's log level before it loads
from absl import flags
import numpy as np
import tensorflow as tf

from datasets import dataset_info
from deployment import tflite_model
from utils import tflite_detector

flags.DEFINE_string('checkpoint_path', None, 'Checkpoint (directory or prefix) to export and time.')
flags.DEFINE_string('dataset_dir', None, 'TFRecords: calibration (train split) and the timed images (test split).')
flags.DEFINE_string('work_dir', '/tmp/tflite_speed', 'Where the exported models are written.')
flags.DEFINE_integer('num_images', 30, 'Timed images per model.')
flags.DEFINE_integer('warmup', 3, 'Untimed runs first.')
flags.DEFINE_integer('num_threads', os.cpu_count(), 'Threads of every model (TFLite interpreter, TF intra-op).')
flags.DEFINE_bool('map', True, 'Also evaluate each model on the whole test split (eval_ssd_network.py).')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args):
    """Runs a script of the repository; stops the bench with its last line when it fails."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, script)] + list(args),
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(result.stderr.strip().splitlines()[-1])


def map07(dataset_dir, results_json, model_flag):
    """VOC07 mAP of eval_ssd_network.py on the test split, model_flag: --checkpoint_path=... or --model=..."""
    run_script('eval_ssd_network.py', f'--dataset_dir={dataset_dir}', f'--results_json={results_json}', model_flag)
    with open(results_json, encoding='utf-8') as source:   # class names in any script
        return json.load(source)['map_voc07']


def size_mb(path):
    """Size of a file, or of everything under a directory, in MB."""
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path)
               for name in names) / 1e6


def images_per_second(run_one, images, warmup):
    for image in images[:warmup]:
        run_one(image)
    start = time.perf_counter()
    for image in images:
        run_one(image)
    return len(images) / (time.perf_counter() - start)


def main(fv):
    os.makedirs(fv.work_dir, exist_ok=True)
    tf.config.threading.set_intra_op_parallelism_threads(fv.num_threads)
    saved_dir = os.path.join(fv.work_dir, 'saved_model')
    shutil.rmtree(saved_dir, ignore_errors=True)   # an earlier run's export may be of another checkpoint
    run_script('deployment/export_serving_model.py', f'--checkpoint_path={fv.checkpoint_path}',
               f'--output_dir={saved_dir}', '--model_version=1')
    models = {'TFLite float32': 'float32.tflite', 'TFLite float16': 'float16.tflite', 'TFLite int8': 'int8.tflite'}
    for quantize, name in zip(('none', 'float16', 'int8'), models.values()):
        run_script('deployment/export_tflite.py', f'--checkpoint_path={fv.checkpoint_path}', f'--quantize={quantize}',
               f'--output_file={os.path.join(fv.work_dir, name)}', f'--dataset_dir={fv.dataset_dir}')
    first = tflite_detector.TFLiteDetector(os.path.join(fv.work_dir, 'float32.tflite'))
    images = tflite_model.record_inputs(dataset_info.list_shards(fv.dataset_dir, 'test'), first.image_size,
                                        fv.num_images)
    serving = tf.saved_model.load(os.path.join(saved_dir, '1')).signatures['serving_uint8']
    rows = [('SavedModel (TF %s)' % tf.__version__, size_mb(os.path.join(saved_dir, '1')), images_per_second(
        lambda image: serving(images=tf.constant(np.round(image).astype(np.uint8))), images, fv.warmup))]
    for label, name in models.items():
        detector = tflite_detector.TFLiteDetector(os.path.join(fv.work_dir, name), num_threads=fv.num_threads)
        rows.append((label, size_mb(os.path.join(fv.work_dir, name)),
                     images_per_second(detector.detect, images, fv.warmup)))
    maps = [None] * len(rows)
    if fv.map:
        model_flags = [f'--checkpoint_path={fv.checkpoint_path}'] + [
            f'--model={os.path.join(fv.work_dir, name)}' for name in models.values()]
        maps = [map07(fv.dataset_dir, os.path.join(fv.work_dir, f'results_{index}.json'), flag)
                for index, flag in enumerate(model_flags)]
    print('| model | size (MB) | images/s at batch 1 | mAP VOC07 |\n|---|---|---|---|')
    for (label, megabytes, speed), value in zip(rows, maps):
        print('| %s | %.2f | %.1f | %s |' % (label, megabytes, speed, '-' if value is None else '%.4f' % value))
    print('load average after the runs: %.2f %.2f %.2f' % os.getloadavg())


if __name__ == '__main__':
    script_setup.run_main(main, flags.FLAGS, required_flags=('checkpoint_path', 'dataset_dir'), graph_mode=False)
