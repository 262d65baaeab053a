"""One pass of a detector over a TFRecord split, for eval_ssd_network.py: the input pipeline and network
(build_eval_graph, or build_tflite_eval_graph for a TFLite model run outside the graph), and the pass that
gathers detections and ground truth into a VOCEvaluator (run_split).
"""
import dataclasses

import numpy as np
import tensorflow.compat.v1 as tf

from datasets import dataset_info, tfrecord_pipeline
from datasets.label_offset import offset_then_preprocess
from preprocessing import preprocessing_factory
from preprocessing.ssd_vgg_preprocessing import VGG_MEAN_RGB, resize_for_eval
from utils import inference_model, visualization, voc_eval
from utils.errors import UserError

SUMMARY_SCORE_THRESHOLD = 0.5   # predicted boxes drawn in TensorBoard images and detections.png
NUM_PLOT_IMAGES = 8             # test images in detections.png
_RECORD_KEYS = ('gt_boxes', 'gt_labels', 'gt_difficult', 'num_boxes', 'image_ok', 'bad_record', 'original_shape')


@dataclasses.dataclass(frozen=True)
class SplitReader:
    """The split to evaluate and how to read it."""
    dataset_dir: str
    split_name: str = 'test'
    batch_size: int = 8
    num_readers: int = 2
    num_threads: int = 2
    max_num_batches: int = None   # None: the whole split


@dataclasses.dataclass(frozen=True)
class EvalGraph:
    """The evaluation graph's handles."""
    network: object              # the SSDNet
    iterator_init: tf.Operation  # (re)starts the one pass over the split
    fetches: dict                # per-batch tensors: detections, ground truth, original_shape
    image_summary: tf.Tensor = None   # image summary op, or None
    plot_images: tf.Tensor = None     # the batch's network inputs as uint8 [B, h, w, 3], or None
    num_plot_images: int = 0          # how many of the first images run_split keeps
    detect_outside: object = None     # pixels [B, h, w, 3] -> detections, for a model run outside the graph


@dataclasses.dataclass
class SplitRun:
    """What one pass over the split gathered; image ids are the reading order 0..N-1."""
    evaluator: voc_eval.VOCEvaluator   # detections and ground truth of every image
    image_sizes: np.ndarray            # [N, 2] (height, width) as decoded; 1 x 1 for an image that did not decode
    images_summary: bytes = None       # serialized image summary of the first batch, or None
    skipped: list = dataclasses.field(default_factory=list)   # records that could not be decoded
    images: list = dataclasses.field(default_factory=list)    # uint8 [h, w, 3] of the first images


def build_eval_graph(config, reader, detect_options, num_summary_images, num_plot_images=0):
    """Input pipeline (one pass, last batch kept) + network + detections, in the default graph: an EvalGraph.

    The ground truth is relabelled as training did (label - labels_offset, boxes falling to 0 or below
    dropped) before the model's eval preprocessing. No image summary when num_summary_images is 0, no
    plot_images when num_plot_images is 0.
    """
    preprocess = offset_then_preprocess(preprocessing_factory.get_preprocessing(config.model_name, is_training=False),
                                        config.labels_offset)
    iterator, batch = _split_batch(reader, preprocess, config.image_size)
    network, detections = inference_model.build_detections(batch['image'], config, detect_options)
    fetches = dict(detections)
    fetches.update({key: batch[key] for key in _RECORD_KEYS})
    pixels = batch['image'] + tf.constant(VGG_MEAN_RGB)   # the network's input as the picture it shows
    plot_images = _as_uint8(pixels) if num_plot_images else None
    image_summary = None
    if num_summary_images:
        pictures = visualization.draw_boxes_graph(
            pixels, detections['detection_boxes'], detections['detection_scores'], batch['gt_boxes'],
            batch['num_boxes'], SUMMARY_SCORE_THRESHOLD)
        image_summary = tf.summary.image('detections', pictures, max_outputs=num_summary_images)
    return EvalGraph(network, iterator.initializer, fetches, image_summary, plot_images, num_plot_images)


def build_tflite_eval_graph(detector, reader, labels_offset=0, num_plot_images=0):
    """build_eval_graph for a TFLite model (utils/tflite_detector.TFLiteDetector), which runs outside the graph:
    the fetches hold the images resized as its input wants them (RGB 0..255, by resize_for_eval; the model
    subtracts the mean itself), which run_split hands to the model one at a time (its input holds one image).
    The ground truth is relabelled as for build_eval_graph; no image summary."""
    def resize_only(image, labels, boxes, difficult, out_shape):
        return resize_for_eval(image, out_shape), labels, boxes, difficult

    iterator, batch = _split_batch(reader, offset_then_preprocess(resize_only, labels_offset), detector.image_size)
    fetches = {key: batch[key] for key in _RECORD_KEYS}
    fetches['pixels'] = batch['image']

    def detect_each(pixels):
        found = [detector.detect(image[None]) for image in pixels]
        return {key: np.concatenate([one[key] for one in found]) for key in found[0]}
    plot_images = _as_uint8(batch['image']) if num_plot_images else None
    return EvalGraph(None, iterator.initializer, fetches, None, plot_images, num_plot_images, detect_each)


def _split_batch(reader, preprocess, image_size):
    """(initializable iterator, its next batch) of one pass over the reader's split, images by `preprocess`."""
    dataset = tfrecord_pipeline.make_dataset(
        dataset_info.list_shards(reader.dataset_dir, reader.split_name), preprocess, tfrecord_pipeline.PipelineConfig(
            reader.batch_size, out_shape=tuple(image_size), is_training=False, num_readers=reader.num_readers,
            num_parallel_calls=reader.num_threads))
    iterator = tf.data.make_initializable_iterator(dataset)
    return iterator, iterator.get_next()


def _as_uint8(pixels):
    return tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8)


def _batch_fetches(graph, first_batch, images_wanted):
    """What to run for one batch: the fetches, plus the image summary (first batch) and the plot images (while
    fewer than wanted are kept)."""
    fetches = {'batch': graph.fetches}
    if first_batch and graph.image_summary is not None:
        fetches['summary'] = graph.image_summary
    if images_wanted > 0:
        fetches['images'] = graph.plot_images
    return fetches


def run_split(session, graph, num_classes, iou_threshold, max_num_batches, remove_difficult=True):
    """One pass over the split of `graph` (an EvalGraph) -> SplitRun. The image summary (when there is one) is
    computed with the first batch only. A skipped record gets no detections, so its ground truth, when its
    annotations could be read, counts as missed. remove_difficult False: difficult objects count as any other.
    """
    session.run(graph.iterator_init)
    evaluator = voc_eval.VOCEvaluator(num_classes, iou_threshold)
    summary, num_batches, skipped, sizes, images = None, 0, [], [], []
    while max_num_batches is None or num_batches < max_num_batches:
        try:
            values = session.run(_batch_fetches(graph, num_batches == 0, graph.num_plot_images - len(images)))
        except tf.errors.OutOfRangeError:
            break
        summary = values.get('summary', summary)
        images.extend(values.get('images', [])[:graph.num_plot_images - len(images)])
        batch = values['batch']
        if graph.detect_outside is not None:
            batch.update(graph.detect_outside(batch['pixels']))
        ok = batch['image_ok']
        skipped.extend(name.decode('utf-8', 'replace') for name in batch['bad_record'][~ok])
        sizes.append(batch['original_shape'][:, :2])
        evaluator.add_batch(batch['detection_boxes'], batch['detection_scores'], batch['detection_classes'],
                            np.where(ok, batch['num_detections'], 0), batch['gt_boxes'], batch['gt_labels'],
                            batch['gt_difficult'] if remove_difficult else np.zeros_like(batch['gt_difficult']),
                            batch['num_boxes'])
        num_batches += 1
    if evaluator.num_images == 0:
        raise UserError('the split holds no images')
    return SplitRun(evaluator, np.concatenate(sizes), summary, skipped, images)
