"""A TF Serving SavedModel of the detector: decoding and preprocessing inside the graph.

Signatures (tag 'serve'):
  serving_default  inputs  image_bytes: string [B], each a JPEG or PNG file (any size; GIF / BMP / WebP
                           also decode; gray becomes RGB, a PNG's transparency is composited on white; a JPEG's EXIF
                           orientation is applied)
  serving_uint8    inputs  images: uint8 [B, H, W, 3] (one size per batch)
  both             outputs detection_boxes [B, K, 4] float32, normalised (ymin, xmin, ymax, xmax) in the
                           original image (the network input is the whole image resized, so normalised
                           coordinates carry over); detection_scores [B, K] float32, descending;
                           detection_classes [B, K] int64 (1..C-1); detection_class_names [B, K] string;
                           num_detections [B] int32. Rows past num_detections are padding (class 0, 'none').
The class names, one per line in label order (line 1 = label 0 = background), are the asset
assets/class_names.txt. Undecodable bytes fail the request with InvalidArgument ("Unknown image file
format", "Invalid PNG", ...), which TF Serving returns to the client.
"""
import os
import re
import shutil
import tempfile

import tensorflow.compat.v1 as tf

from utils import checkpoints, devices, inference_model
from utils.errors import UserError

BYTES_SIGNATURE = 'serving_default'
UINT8_SIGNATURE = 'serving_uint8'
CLASS_NAMES_ASSET = 'class_names.txt'
_TEMP_PREFIX = '.export-tmp-'   # not an integer: TF Serving never loads a half-written version


def build_signatures(config, detect_options):
    """Both signatures' graphs in the default graph (the network twice, sharing variables).

    Returns (network, {signature name: SignatureDef}).
    """
    image_bytes = tf.placeholder(tf.string, [None], name='image_bytes')
    images = tf.placeholder(tf.uint8, [None, None, None, 3], name='images')
    class_names = tf.constant(list(config.class_names), name='class_names')
    signatures, network = {}, None
    for name, inputs, decode in ((BYTES_SIGNATURE, {'image_bytes': image_bytes}, True),
                                 (UINT8_SIGNATURE, {'images': images}, False)):
        with tf.name_scope(name):
            network, detections = inference_model.detect_images(
                next(iter(inputs.values())), config, detect_options, decode=decode,
                reuse=tf.AUTO_REUSE, portable=True)
            outputs = dict(detections)
            outputs['detection_class_names'] = tf.gather(class_names, detections['detection_classes'],
                                                         name='detection_class_names')
        signatures[name] = tf.saved_model.signature_def_utils.predict_signature_def(inputs, outputs)
    return network, signatures


def next_version(output_dir):
    """1 + the largest integer-named subdirectory of output_dir (1 when there is none)."""
    versions = [int(name) for name in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
                if re.fullmatch(r'\d+', name) and os.path.isdir(os.path.join(output_dir, name))]
    return max(versions, default=0) + 1


def frozen_signatures(prefix, config, detect_options, use_moving_averages, names_file):
    """(GraphDef of both signatures with the checkpoint's weights as constants, the SignatureDefs).

    Constant weights let oneDNN reorder each filter once and keep it (it reorders variables on every call:
    +30% images/s at batch 1 on a 2-core CPU), and TF Serving needs no variables. The constant
    'class_names_asset' holds the path of names_file, the asset the SavedModel copies.
    """
    with tf.Graph().as_default() as graph:
        network, signatures = build_signatures(config, detect_options)
        tf.constant(names_file, name='class_names_asset')
        variables_map = checkpoints.inference_variable_map(prefix, network, use_moving_averages)
        outputs = sorted({info.name.split(':')[0] for signature in signatures.values()
                          for info in signature.outputs.values()} | {'class_names_asset'})
        with tf.Session(config=devices.session_config()) as session:
            checkpoints.restore_for_inference(session, tf.train.Saver(var_list=variables_map), prefix,
                                              variables_map, config)
            graph_def = tf.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), outputs)
    return graph_def, signatures


def export(prefix, config, output_dir, detect_options, version=None, use_moving_averages=False):
    """Writes output_dir/<version>/ (a SavedModel of the checkpoint `prefix`, network of the ModelConfig `config`
    in its data_format) and returns its path.

    The model is built and saved in a temporary directory inside output_dir, then renamed: the version
    directory appears only when complete (one an export killed midway left is removed by the next). version: an integer, default next_version(output_dir).
    use_moving_averages: export the checkpoint's moving averages of the weights (see
    checkpoints.inference_variable_map); the SavedModel stores them under the variables' own names.
    """
    os.makedirs(output_dir, exist_ok=True)
    for name in os.listdir(output_dir):   # left by an export that was killed
        if name.startswith(_TEMP_PREFIX):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    version = next_version(output_dir) if version is None else int(version)
    final_dir = os.path.join(output_dir, str(version))
    if os.path.exists(final_dir):
        raise UserError(f'{final_dir}: version {version} exists already; pass another --model_version')
    work_dir = tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=output_dir)
    try:
        names_file = os.path.join(work_dir, CLASS_NAMES_ASSET)
        with open(names_file, 'w', encoding='utf-8') as out:
            out.write('\n'.join(config.class_names) + '\n')
        saved_dir = os.path.join(work_dir, 'saved_model')
        graph_def, signatures = frozen_signatures(prefix, config, detect_options, use_moving_averages, names_file)
        with tf.Graph().as_default() as graph:
            tf.import_graph_def(graph_def, name='')
            tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS, graph.get_tensor_by_name('class_names_asset:0'))
            with tf.Session(config=devices.session_config()) as session:
                builder = tf.saved_model.Builder(saved_dir)
                builder.add_meta_graph_and_variables(
                    session, [tf.saved_model.tag_constants.SERVING], signature_def_map=signatures,
                    assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS), strip_default_attrs=True)
                builder.save()
        try:
            os.rename(saved_dir, final_dir)
        except OSError as err:
            raise UserError(f'{final_dir}: cannot create the version directory ({err})') from None
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return final_dir
