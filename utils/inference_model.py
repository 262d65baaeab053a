"""A trained detector rebuilt for inference: network, detections on preprocessed or raw images.

Shared by eval_ssd_network.py, detect.py and deployment/export_serving_model.py. The network comes from a
utils.model_config.ModelConfig (model_config.inference_config: the model_config.json beside the checkpoint
and the tools' overrides); its weights are restored by utils.checkpoints.
"""
import tensorflow.compat.v1 as tf
import tf_slim as slim

from preprocessing import exif_orientation
from preprocessing.preprocessing_factory import get_preprocessing


def build_detections(images, config, detect_options, reuse=None, portable=False):
    """Network forward pass and post-processing on preprocessed images.

    images: float32 [B, h, w, 3] NHWC, mean-subtracted, h x w = config.image_size.
    config: a ModelConfig; its data_format is the layout the layers run in (weights are the same in both).
    detect_options: keyword arguments of net.detect (score_threshold, nms_threshold, top_k, keep_top_k).
    portable: a graph every TensorFlow build runs (conv6's dilation by taps, for a SavedModel that
    may be served without oneDNN); otherwise the fastest form this process runs (nets/ssd_layers.py).
    Returns (network, net.detect's dict: detection_boxes [B, K, 4] normalised yxyx, detection_scores,
    detection_classes, num_detections).
    """
    network = config.build_network()
    with slim.arg_scope(network.arg_scope(data_format=config.data_format)):
        logits, localisations, _ = network.build(images, is_training=False, data_format=config.data_format,
                                                 reuse=reuse, native_dilation=False if portable else None)
    return network, network.detect(logits, localisations, **detect_options)


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def decode_rgb(image_bytes):
    """uint8 [H, W, 3] of one encoded image (JPEG, PNG, GIF, BMP, WebP), as the converter stores it
    (datasets/voc_reader.to_rgb): a PNG's transparency is composited on white, rgb' = a rgb + (1 - a) 255 with
    a = alpha / 255, so that a product shot on a transparent background is seen on the white training saw,
    not on whatever colour its transparent pixels hold; gray and palette images become RGB.
    Undecodable bytes fail the run with InvalidArgument from an op under 'decode_image_bytes'."""
    def png_on_white():
        rgba = tf.cast(tf.io.decode_png(image_bytes, channels=4), tf.float32)   # opaque PNGs get alpha 255
        alpha = rgba[..., 3:] / 255.
        return tf.cast(tf.round(rgba[..., :3] * alpha + 255. * (1. - alpha)), tf.uint8)

    def any_image():
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    with tf.name_scope('decode_image_bytes'):
        is_png = tf.equal(tf.strings.substr(image_bytes, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
        decoded = tf.cond(is_png, png_on_white, any_image)
    decoded.set_shape([None, None, 3])
    return decoded


def detect_images(images, config, detect_options, decode=False, reuse=None, portable=False):
    """build_detections on raw images: each is decoded (decode=True), resized to config.image_size and
    mean-subtracted by the model's eval preprocessing.

    images: string [B] of encoded JPEG / PNG files (decode=True, by decode_rgb; a photo stored turned is turned
    upright per its EXIF orientation, as training's records and detect.py have it), or uint8 [B, H, W, 3] of
    any size. Boxes are normalised, so they hold for the original images (upright). Returns build_detections'
    (network, detections).
    """
    preprocess = get_preprocessing(config.model_name, is_training=False)
    out_shape = tuple(config.image_size)
    no_labels = tf.zeros([0], tf.int64)

    def one_image(image):
        if not decode:
            return preprocess(image, no_labels, tf.zeros([0, 4]), no_labels, out_shape=out_shape)[0]
        decoded = decode_rgb(image)
        pixels = preprocess(decoded, no_labels, tf.zeros([0, 4]), no_labels, out_shape=out_shape)[0]
        # Turned after the resize, which commutes with it (the network's input is square, the resize separable
        # and symmetric): a few hundred pixels to move instead of a photo's millions, in float32 (oneDNN's
        # rewrite pass logs an error for a uint8 transpose).
        return exif_orientation.turn_upright(pixels, exif_orientation.exif_orientation(image))
    batch = tf.map_fn(one_image, images, dtype=tf.float32, back_prop=False)
    batch.set_shape([None, out_shape[0], out_shape[1], 3])
    return build_detections(batch, config, detect_options, reuse=reuse, portable=portable)
