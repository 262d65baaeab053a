"""Run a trained SSD on image files: pictures with labelled boxes, and one JSON line per detection.

    python detect.py --checkpoint_path=ckpt/fine_tuning --images=a.jpg,photos/*.png --output_dir=out/

Images of any size and mode (JPEG, PNG, CMYK, grayscale, 16-bit, alpha, ...) are read with Pillow, upright per
their EXIF orientation, in RGB as the converter stores them (datasets/voc_reader.to_rgb); the network sees
them resized to its input size, and boxes are reported in pixels of the original: {"image", "class",
"class_id", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}, with x = x_normalised * width and
y = y_normalised * height. Detections scoring below --score_threshold are
neither drawn nor printed. The model configuration is read from model_config.json beside the checkpoint;
--model_name, --num_classes, --depth_multiplier, --anchor_set override it.

    python detect.py --model=model.tflite --images=a.jpg --output_dir=out/

runs a TFLite model of deployment/export_tflite.py instead (tf.lite.Interpreter), with the post-processing
baked into it at export; the class names come from the model's .labels.txt.
"""
import contextlib
import glob
import json
import os
import sys

# The weights are restored once and never change: oneDNN may keep each filter's reordered copy instead of
# reordering it on every image (1.3x images/s at batch 1 on a 2-core CPU). Read when TensorFlow loads.
os.environ.setdefault('TF_ONEDNN_ASSUME_FROZEN_WEIGHTS', '1')
from utils import script_setup  # noqa: E402  first: sets TensorFlow's log level before it loads
from absl import flags
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
import tensorflow.compat.v1 as tf

from datasets.voc_reader import image_names, to_rgb
from preprocessing.ssd_vgg_preprocessing import resize_for_eval
from utils import checkpoints, devices, inference_flags, inference_model, tflite_detector, visualization
from utils.errors import UserError
from utils.file_io import make_writable_folder

flags.DEFINE_string('images', None, 'Comma-separated image files, glob patterns or folders (the images in them).')
flags.DEFINE_string('output_dir', None, 'Where the pictures with boxes are written.')
inference_flags.define_tflite_flag('run (only --score_threshold of the post-processing flags applies)')
inference_flags.define_postprocess_flags('score_threshold', 0.5, 'Minimum score of a detection to draw and print.')
inference_flags.define_model_flags()
flags.adopt_module_key_flags(inference_flags)   # --help lists them with this script's own

_SAVE_FORMATS = {'JPEG': ('JPEG', '.jpg'), 'PNG': ('PNG', '.png')}   # others are written as PNG


def expand_image_patterns(patterns):
    """'a.jpg,dir/*.png,photos/' -> (sorted unique existing files, the patterns that match no file); a folder
    stands for the images in it, and a whole value naming one file is that file even with commas in its name.
    UserError when no pattern matches a file."""
    paths, unmatched = [], []
    for pattern in [patterns] if os.path.isfile(patterns) else (item.strip() for item in patterns.split(',')):
        if not pattern:
            continue
        if os.path.isdir(pattern):
            matches = [os.path.join(pattern, name) for name in image_names(pattern)]
        else:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matches = [path for path in matches if os.path.isfile(path)]
        if not matches:
            unmatched.append(pattern)
        paths.extend(path for path in matches if path not in paths)
    if not paths:
        raise UserError(f'--images: no such image file: {", ".join(unmatched)}' if unmatched
                        else '--images: no image given')
    return paths, unmatched


def read_image(path):
    """(PIL RGB image upright per EXIF, converted as the converter converts it, original format name); UserError
    for an unreadable file."""
    try:
        with Image.open(path) as source:
            image_format = source.format
            image = to_rgb(ImageOps.exif_transpose(source))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise UserError(f'{path}: cannot read the image ({err})') from None
    return image, image_format


def output_path(output_dir, image_path, image_format, taken):
    """output_dir/<name>.<jpg|png>, with _2, _3... when another input already used the name."""
    save_format, extension = _SAVE_FORMATS.get(image_format, ('PNG', '.png'))
    stem = os.path.splitext(os.path.basename(image_path))[0]
    candidate, counter = stem + extension, 1
    while candidate in taken:
        counter += 1
        candidate = '%s_%d%s' % (stem, counter, extension)
    taken.add(candidate)
    return os.path.join(output_dir, candidate), save_format


def confident_indices(detections, score_threshold):
    """Indices of one image's valid detections scoring >= score_threshold."""
    return np.flatnonzero(detections['detection_scores'][:detections['num_detections']] >= score_threshold)


def detection_records(image_path, detections, keep, class_names, height, width):
    """JSON-ready dicts of one image's detections `keep`, boxes in pixels of the original image."""
    pixels = visualization.boxes_to_pixels(detections['detection_boxes'][keep], height, width)
    records = []
    for index, (ymin, xmin, ymax, xmax) in zip(keep, pixels):
        class_id = int(detections['detection_classes'][index])
        records.append({'image': image_path, 'class': class_names[class_id], 'class_id': class_id,
                        'score': round(float(detections['detection_scores'][index]), 5),
                        'box': {'xmin': round(xmin, 2), 'ymin': round(ymin, 2),
                                'xmax': round(xmax, 2), 'ymax': round(ymax, 2)}})
    return records


def build_graph(config, detect_options):
    """Placeholder uint8 [H, W, 3] (any size) -> detections of that one image (batch dimension removed)."""
    image = tf.placeholder(tf.uint8, [None, None, 3], name='image')
    network, detections = inference_model.detect_images(image[None], config, detect_options)
    return image, network, {key: value[0] for key, value in detections.items()}


def detect_and_draw(detect_fn, path, class_names, score_threshold):
    """Detections of one image file (detect_fn: uint8 [H, W, 3] -> that image's detections): printed as JSON
    lines; returns (the picture with them drawn, its format, how many)."""
    image, image_format = read_image(path)
    values = detect_fn(np.asarray(image))
    keep = confident_indices(values, score_threshold)
    records = detection_records(path, values, keep, class_names, image.height, image.width)
    for record in records:
        print(json.dumps(record, ensure_ascii=False), flush=True)   # names as written ('可乐'), not \u escapes
    picture = visualization.draw_detections(image, values['detection_boxes'][keep], values['detection_classes'][keep],
                                            values['detection_scores'][keep], class_names)
    return picture, image_format, len(records)


def detections_said(count, score_threshold):
    """'1 detection', '3 detections'; none: which score it takes and the flag that lowers it."""
    if count == 0:
        return f'no detection scoring {score_threshold:g} or more (--score_threshold shows weaker ones)'
    return f'{count} detection' + ('s' if count > 1 else '')


@contextlib.contextmanager
def checkpoint_detector(fv, prefix, detect_options):
    """(detect_fn, class names) of the checkpoint at `prefix` (--checkpoint_path's), restored once."""
    config = inference_flags.model_config(fv, prefix, inference_flags.run_data_format(fv))
    with tf.Graph().as_default():
        image_input, network, detections = build_graph(config, detect_options)
        variables_map = inference_flags.weights_to_restore(fv, prefix, network)
        with tf.Session(config=devices.session_config()) as session:
            checkpoints.restore_for_inference(session, tf.train.Saver(var_list=variables_map), prefix,
                                              variables_map, config)
            yield (lambda pixels: session.run(detections, {image_input: pixels})), config.class_names


@contextlib.contextmanager
def tflite_model_detector(model_path):
    """(detect_fn, class names) of a TFLite model; images are resized here as evaluation resizes them."""
    detector = tflite_detector.TFLiteDetector(model_path)
    class_names = detector.class_names()
    with tf.Graph().as_default():
        image = tf.placeholder(tf.uint8, [None, None, 3])
        network_input = resize_for_eval(image, detector.image_size)[None]
        with tf.Session(config=devices.session_config()) as session:
            def detect_fn(pixels):
                values = detector.detect(session.run(network_input, {image: pixels}))
                return {key: value[0] for key, value in values.items()}
            yield detect_fn, class_names


def main(fv):
    """Loads the model once (checkpoint or TFLite), then detects, prints and draws image by image."""
    inference_flags.check_model_source(fv)
    if fv.model:
        inference_flags.check_tflite_flags(fv)
    detect_options = inference_flags.postprocess_options(fv, 'score_threshold')
    make_writable_folder(fv.output_dir, '--output_dir')
    # The images are looked for before the model loads: a typo shows at once.
    prefix = None if fv.model else checkpoints.require_checkpoint(fv.checkpoint_path)
    image_paths, unmatched = expand_image_patterns(fv.images)
    for pattern in unmatched:   # like an unreadable file: said, and the others are processed
        print(f'{pattern}: no such image file; skipped', file=sys.stderr)
    detector = tflite_model_detector(fv.model) if fv.model else checkpoint_detector(fv, prefix, detect_options)
    with detector as (detect_fn, class_names):
        written, unreadable, num_detections = set(), [], 0
        for path in image_paths:
            try:
                picture, image_format, count = detect_and_draw(detect_fn, path, class_names, fv.score_threshold)
            except UserError as err:   # an unreadable file among many: say so and go on with the others
                print(f'{err}; skipped', file=sys.stderr)
                unreadable.append(err)
                continue
            destination, save_format = output_path(fv.output_dir, path, image_format, written)
            picture.save(destination, format=save_format)
            num_detections += count
            print(f'{path}: {detections_said(count, fv.score_threshold)} -> {destination}', file=sys.stderr)
        if len(unreadable) == len(image_paths):   # nothing drawn: the run failed
            raise unreadable[-1]
    # After many images the per-image lines have scrolled away: the totals.
    print(f'{len(written)} image(s) drawn in {fv.output_dir}, {num_detections} detection(s) scoring '
          f'{fv.score_threshold:g} or more, {len(unreadable) + len(unmatched)} skipped', file=sys.stderr)


if __name__ == '__main__':
    script_setup.run_main(main, flags.FLAGS, required_flags=('images', 'output_dir'))
