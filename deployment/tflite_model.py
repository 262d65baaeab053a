"""A TFLite model of the detector for devices: the network and its post-processing in one .tflite file that the
standard TFLite runtime (tf.lite.Interpreter, no Flex delegate) runs.

Input 'images': float32 [1, h, w, 3], RGB pixels 0..255 already resized to the network's input size with
preprocessing.ssd_vgg_preprocessing.resize_for_eval (the mean is subtracted inside). Outputs, as TFLite's
built-in custom op TFLite_Detection_PostProcess gives them: detection_boxes [1, K, 4] normalised
(ymin, xmin, ymax, xmax), not clipped; detection_classes [1, K] float, 0-based without the background (model
class - 1); detection_scores [1, K]; num_detections [1] float. K = keep_top_k.

The post-processing is marked the TF Object Detection API's way: an empty tf.function whose
`experimental_implements` names TFLite_Detection_PostProcess with its attributes, called on the box encodings,
the class scores (softmax, background included) and the anchors (cy, cx, h, w); the converter replaces the
call with the op. The op decodes as nets/box_coder.decode does when y_scale, x_scale, h_scale, w_scale are
1 / prior_scaling, and runs per-class NMS (use_regular_nms) like nets/postprocess.detect, except that it has no
per-class top-k before NMS (select_top_k): every anchor above the score threshold is a candidate. The converter
passes on only the attributes it knows, not detections_per_class (the kernel then keeps 100 per class), so
convert() writes it into the op's options afterwards, equal to max_detections as net.detect has it.
"""
import contextlib
import logging
import os

from absl import logging as absl_logging
from flatbuffers import flexbuffers
import numpy as np
import tensorflow as tf2
import tensorflow.compat.v1 as tf
import tf_slim as slim
from tensorflow.lite.python import convert as lite_convert
from tensorflow.lite.tools import flatbuffer_utils

from datasets import tfrecord_pipeline
from preprocessing.ssd_vgg_preprocessing import VGG_MEAN_RGB, resize_for_eval
from utils import checkpoints, devices

POSTPROCESS_OP = 'TFLite_Detection_PostProcess'
QUANTIZE_CHOICES = ('none', 'float16', 'int8')
INPUT_NAME = 'images'
OUTPUT_NAMES = ('detection_boxes', 'detection_classes', 'detection_scores', 'num_detections')
_NETWORK_OUTPUTS = ('scores', 'localisations')


def postprocess_attributes(num_classes, prior_scaling, detect_options):
    """TFLite_Detection_PostProcess's attributes {name: int | float | bool} for a network of num_classes
    (background included), its prior_scaling (s_y, s_x, s_h, s_w) and net.detect's options (score_threshold,
    nms_threshold, keep_top_k; top_k has no counterpart)."""
    s_y, s_x, s_h, s_w = (float(scale) for scale in prior_scaling)
    return {'max_detections': int(detect_options['keep_top_k']),
            'detections_per_class': int(detect_options['keep_top_k']),
            'max_classes_per_detection': 1, 'use_regular_nms': True,
            'nms_score_threshold': float(detect_options['score_threshold']),
            'nms_iou_threshold': float(detect_options['nms_threshold']),
            'y_scale': 1.0 / s_y, 'x_scale': 1.0 / s_x, 'h_scale': 1.0 / s_h, 'w_scale': 1.0 / s_w,
            'num_classes': int(num_classes) - 1}


def implements_signature(attributes):
    """The `experimental_implements` text (a NameAttrList in protobuf text form) naming the op and attributes."""
    def value(item):
        if isinstance(item, bool):
            return 'b: %s' % str(item).lower()
        return 'i: %d' % item if isinstance(item, int) else 'f: %r' % item
    return ' '.join(['name: "%s"' % POSTPROCESS_OP] + ['attr { key: "%s" value { %s } }' % (key, value(item))
                                                         for key, item in attributes.items()])


def postprocess_function(attributes):
    """A tf.function(box_encodings [1, N, 4], class_scores [1, N, C], anchors [N, 4]) that the converter turns
    into TFLite_Detection_PostProcess; its TensorFlow body returns placeholders only (never run)."""
    @tf2.function(experimental_implements=implements_signature(attributes))
    def detection_postprocess(box_encodings, class_scores, anchors):
        del box_encodings, class_scores, anchors   # the TFLite op reads them
        return tuple(tf2.constant(0.0, name=name) for name in OUTPUT_NAMES)
    return detection_postprocess


def frozen_network(prefix, config, use_moving_averages=False):
    """GraphDef of the network with the checkpoint's weights as constants: 'images' (float32 [1, h, w, 3] pixels)
    -> 'scores' (softmax [1, N, C]) and 'localisations' ([1, N, 4] encoded boxes). conv6 in its portable form."""
    with tf.Graph().as_default() as graph:
        images = tf.placeholder(tf.float32, [1] + list(config.image_size) + [3], name=INPUT_NAME)
        network = config.build_network()
        with slim.arg_scope(network.arg_scope(data_format='NHWC')):
            logits, localisations, _ = network.build(images - tf.constant(VGG_MEAN_RGB), is_training=False,
                                                     native_dilation=False)
        tf.nn.softmax(logits, name=_NETWORK_OUTPUTS[0])
        tf.identity(localisations, name=_NETWORK_OUTPUTS[1])
        variables_map = checkpoints.inference_variable_map(prefix, network, use_moving_averages)
        with tf.Session(config=devices.session_config()) as session:
            checkpoints.restore_for_inference(session, tf.train.Saver(var_list=variables_map), prefix,
                                              variables_map, config)
            return tf.graph_util.convert_variables_to_constants(session, graph.as_graph_def(),
                                                                list(_NETWORK_OUTPUTS))


class DetectorModule(tf2.Module):
    """The frozen network followed by the post-processing, as the tf.function `detect` to convert."""

    def __init__(self, graph_def, anchors, attributes, image_size):
        super().__init__()
        postprocess = postprocess_function(attributes)
        anchors = np.asarray(anchors, np.float32)

        def detect(images):
            scores, localisations = tf.graph_util.import_graph_def(
                graph_def, input_map={INPUT_NAME + ':0': images}, name='network',
                return_elements=[name + ':0' for name in _NETWORK_OUTPUTS])
            return dict(zip(OUTPUT_NAMES, postprocess(localisations, scores, tf2.constant(anchors))))
        self.detect = tf2.function(detect, input_signature=[
            tf2.TensorSpec([1] + list(image_size) + [3], tf2.float32, name=INPUT_NAME)])


def convert(module, quantize='none', calibration_images=None):
    """The .tflite bytes of a DetectorModule. quantize: 'none' (float32), 'float16' (weights), 'int8' (weights
    and activations, calibrated on calibration_images, a list of float32 [1, h, w, 3] inputs, with
    with_mean_ranges's rule; ops without an int8 kernel stay float)."""
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError('quantize must be one of %s, got %r' % (', '.join(QUANTIZE_CHOICES), quantize))
    with _info_logs_off():
        converter = tf2.lite.TFLiteConverter.from_concrete_functions([module.detect.get_concrete_function()],
                                                                     module)
        if quantize == 'int8':
            model = quantized_int8(converter, calibration_images)
        else:
            if quantize == 'float16':
                converter.optimizations = [tf2.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf2.float16]
            model = converter.convert()
    return with_postprocess_options(model, {'detections_per_class': attributes_of(model)['max_detections']})


def quantized_int8(converter, images):
    """The converter's model with int8 weights and activations, float input and outputs: what it makes with
    Optimize.DEFAULT and `images` (a list of float32 inputs) as its representative dataset, but for the
    activation ranges, with_mean_ranges's. (The converter calibrates, then quantizes; calibrate_only stops it
    between the two.)"""
    converter.optimizations = [tf2.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image] for image in images)
    converter._experimental_calibrate_only = True
    return lite_convert.mlir_quantize(with_mean_ranges(converter.convert(), images),
                                      input_data_type=tf2.float32, output_data_type=tf2.float32)


def with_mean_ranges(calibrated, images):
    """The calibrated model (the converter's float model holding each activation's range, before quantization)
    with each activation's range set to the mean over `images` of its per-image range,
        [mean_i min(x_i), mean_i max(x_i)],
    instead of the converter's [min_i min(x_i), max_i max(x_i)]: the rule of TensorFlow's quantization-aware
    training (moving averages of each batch's min and max). With the extremes over all images, a large value in
    one image coarsens every image's step, and more calibration images only widen it: on the demo, 100 images
    took a checkpoint's mAP from 0.775 to 0.707, 20 to 0.744; the mean ranges give 0.768 (bench/RESULTS.md).
    The model's inputs keep the calibration's extremes (the images' darkest and brightest pixels)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    if len(model.subgraphs) != 1:   # the detector has one; a control-flow model would need every subgraph's
        raise ValueError(f'with_mean_ranges takes a model of one subgraph, got {len(model.subgraphs)}')
    graph = model.subgraphs[0]
    inputs = {int(index) for index in graph.inputs}
    ranged = [index for index, tensor in enumerate(graph.tensors) if index not in inputs
              and tensor.quantization is not None and tensor.quantization.min is not None
              and len(tensor.quantization.min) == 1]
    # Without the default (XNNPACK) delegate, whose fused kernels keep no intermediate tensor.
    interpreter = tf2.lite.Interpreter(
        model_content=calibrated, experimental_preserve_all_tensors=True, num_threads=os.cpu_count(),
        experimental_op_resolver_type=tf2.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]['index']
    lows, highs = np.zeros(len(ranged)), np.zeros(len(ranged))
    for image in images:
        interpreter.set_tensor(input_index, image)
        interpreter.invoke()
        values = [interpreter.get_tensor(index) for index in ranged]
        lows += [value.min() for value in values]
        highs += [value.max() for value in values]
    for index, low, high in zip(ranged, lows / len(images), highs / len(images)):
        graph.tensors[index].quantization.min, graph.tensors[index].quantization.max = [float(low)], [float(high)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _postprocess_operators(model):
    """The TFLite_Detection_PostProcess operators (object API) of a flatbuffer_utils model."""
    codes = model.operatorCodes
    return [operator for subgraph in model.subgraphs for operator in subgraph.operators
            if codes[operator.opcodeIndex].customCode == POSTPROCESS_OP.encode()]


def attributes_of(model_bytes):
    """The attributes (custom options) of the model's TFLite_Detection_PostProcess: a dict."""
    operators = _postprocess_operators(flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes)))
    return flexbuffers.Loads(bytes(operators[0].customOptions))


def with_postprocess_options(model_bytes, options):
    """The model with `options` added to its TFLite_Detection_PostProcess attributes. The converter passes on only
    the attributes it knows, without detections_per_class, which the kernel then takes as 100."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    for operator in _postprocess_operators(model):
        merged = dict(flexbuffers.Loads(bytes(operator.customOptions)), **options)
        operator.customOptions = list(flexbuffers.Dumps(merged))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@contextlib.contextmanager
def _info_logs_off():
    """The converter saves a temporary SavedModel and logs each step of it at INFO (TensorFlow's logger and absl's,
    whose level the converter re-applies from absl's verbosity flag): nothing a user acts on."""
    tensorflow_logger = logging.getLogger('tensorflow')
    levels = tensorflow_logger.level, absl_logging.get_verbosity()
    tensorflow_logger.setLevel(max(tensorflow_logger.getEffectiveLevel(), logging.WARNING))
    absl_logging.set_verbosity(min(levels[1], absl_logging.WARNING))
    try:
        yield
    finally:
        tensorflow_logger.setLevel(levels[0])
        absl_logging.set_verbosity(levels[1])


def record_inputs(shards, image_size, count):
    """The model's inputs (float32 [1, h, w, 3], resize_for_eval) of the first `count` images of the record files
    `shards` that decode: int8 calibration data; needs eager execution."""
    dataset = tf2.data.TFRecordDataset(list(shards))
    dataset = dataset.map(lambda record: tfrecord_pipeline.parse_example(record)['image']).ignore_errors()
    dataset = dataset.take(count).map(lambda image: resize_for_eval(image, tuple(image_size))[None])
    return [image.numpy() for image in dataset]
