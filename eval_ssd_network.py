"""Evaluate an SSD checkpoint on a TFRecord split: per-class AP and mAP by the VOC2007 and VOC2010+ rules.

    python eval_ssd_network.py --dataset_dir=IMAGE/tfrecords --dataset_split_name=test \
        --checkpoint_path=ckpt/fine_tuning --eval_dir=ckpt/eval [--results_json=ckpt/eval/results.json]

Restores the newest checkpoint of a directory (or the given one), runs the split once, decodes and NMSes
with the network's post-processing, prints a table, writes TensorBoard summaries (mAP, per-class AP,
images with true boxes in green and predicted ones in red) to --eval_dir and, when asked, --results_json.
--wait_for_checkpoints evaluates each new checkpoint that training writes, until stopped (Ctrl-C) or
--wait_timeout_secs pass without one. The model configuration is read from model_config.json beside the
(first) checkpoint; --model_name, --num_classes, --depth_multiplier, --anchor_set override it. The dataset's
classes must be the model's, after the labels_offset training applied (the ground truth gets it too).
"""
import itertools
import os
import sys
import time

from utils import script_setup  # first: sets TensorFlow's log level before it loads
from absl import flags
import tensorflow.compat.v1 as tf

from datasets import dataset_info, tfrecord_pipeline
from datasets.label_offset import apply_labels_offset
from nets import nets_factory
from preprocessing import preprocessing_factory
from preprocessing.ssd_vgg_preprocessing import VGG_MEAN_RGB
from utils import inference_flags, inference_model, visualization, voc_eval
from utils.file_io import write_json_atomically
from utils.errors import UserError

FLAGS = flags.FLAGS

# Data.
flags.DEFINE_string('dataset_dir', None, 'Directory of the TFRecord shards (and dataset_info.json).')
flags.DEFINE_string('dataset_name', None, 'Built-in class list for record directories without '
                    'dataset_info.json (pascalvoc_2007, pascalvoc_2012).')
flags.DEFINE_string('dataset_split_name', 'test', 'Split to evaluate.')
flags.DEFINE_integer('batch_size', 8, 'Images per batch.')
flags.DEFINE_integer('num_readers', 2, 'Shards read in parallel.')
flags.DEFINE_integer('num_preprocessing_threads', 2, 'Parallel decode / resize calls.')
flags.DEFINE_integer('max_num_batches', None, 'Stop after this many batches (default: the whole split).')
# Outputs.
flags.DEFINE_string('eval_dir', None, 'Directory for TensorBoard summaries.')
flags.DEFINE_string('results_json', None, 'Write per-class AP, mAP, checkpoint and step here.')
flags.DEFINE_bool('wait_for_checkpoints', False, 'Evaluate every new checkpoint until stopped.')
flags.DEFINE_integer('eval_interval_secs', 60, 'Minimum seconds between two evaluations when waiting.')
flags.DEFINE_integer('wait_timeout_secs', None, 'Stop waiting after this many seconds without a new '
                     'checkpoint (default: wait until stopped).')
flags.DEFINE_integer('num_summary_images', 4, 'Images with boxes written to TensorBoard per evaluation (0: none).')
inference_flags.define_model_flags()
inference_flags.define_postprocess_flags()
flags.DEFINE_float('matching_threshold', 0.5, 'IoU at which a detection matches a ground truth.')

_SUMMARY_SCORE_THRESHOLD = 0.5   # predicted boxes drawn in TensorBoard images


def eval_preprocessing(model_name, labels_offset):
    """The model's eval preprocessing, after relabelling the ground truth as training did: label -
    labels_offset, boxes whose label falls to 0 or below dropped (datasets.label_offset)."""
    preprocess = preprocessing_factory.get_preprocessing(model_name, is_training=False)

    def offset_then_preprocess(image, labels, boxes, difficult, out_shape):
        labels, boxes, difficult = apply_labels_offset(labels, boxes, difficult, labels_offset)
        return preprocess(image, labels, boxes, difficult, out_shape=out_shape)
    return offset_then_preprocess


def build_eval_graph(config, dataset_dir, split_name, batch_size, num_readers, num_threads, data_format,
                     detect_options, num_summary_images):
    """Input pipeline (one pass, last batch kept) + network + detections, in the default graph.

    Returns (network, iterator initializer op, fetches dict of per-batch tensors, image summary op or None
    when num_summary_images is 0).
    """
    filenames = dataset_info.list_shards(dataset_dir, split_name)
    dataset = tfrecord_pipeline.make_dataset(
        filenames, eval_preprocessing(config['model_name'], config['labels_offset']), tfrecord_pipeline.PipelineConfig(
            batch_size, out_shape=tuple(config['image_size']), is_training=False, num_readers=num_readers,
            num_parallel_calls=num_threads))
    iterator = tf.data.make_initializable_iterator(dataset)
    batch = iterator.get_next()
    network, detections = inference_model.build_detections(batch['image'], config, data_format, detect_options)
    fetches = dict(detections)
    fetches.update({key: batch[key] for key in ('gt_boxes', 'gt_labels', 'gt_difficult', 'num_boxes')})
    if not num_summary_images:
        return network, iterator.initializer, fetches, None
    pictures = visualization.draw_boxes_graph(
        batch['image'] + tf.constant(VGG_MEAN_RGB), detections['detection_boxes'],
        detections['detection_scores'], batch['gt_boxes'], batch['num_boxes'], _SUMMARY_SCORE_THRESHOLD)
    image_summary = tf.summary.image('detections', pictures, max_outputs=num_summary_images)
    return network, iterator.initializer, fetches, image_summary


def run_split(session, iterator_init, fetches, image_summary, num_classes, iou_threshold, max_num_batches):
    """One pass over the split -> (VOCResults, number of images, serialized image summary).

    The image summary (when there is one) is computed with the first batch only.
    """
    session.run(iterator_init)
    evaluator = voc_eval.VOCEvaluator(num_classes, iou_threshold)
    summary, num_batches = None, 0
    while max_num_batches is None or num_batches < max_num_batches:
        try:
            values = session.run({'batch': fetches, 'summary': image_summary}
                                 if num_batches == 0 and image_summary is not None else {'batch': fetches})
        except tf.errors.OutOfRangeError:
            break
        summary = values.get('summary', summary)
        batch = values['batch']
        evaluator.add_batch(batch['detection_boxes'], batch['detection_scores'], batch['detection_classes'],
                            batch['num_detections'], batch['gt_boxes'], batch['gt_labels'], batch['gt_difficult'],
                            batch['num_boxes'])
        num_batches += 1
    if evaluator.num_images == 0:
        raise UserError('the split holds no images')
    return evaluator.compute(), evaluator.num_images, summary


def scalar_summary(results, class_names):
    """tf.Summary with mAP (both rules) and the AP of every class that has ground truth."""
    values = [tf.Summary.Value(tag='mAP/VOC07', simple_value=results.map07),
              tf.Summary.Value(tag='mAP/VOC2010', simple_value=results.map10)]
    for class_id in range(1, len(results.num_gt)):
        if results.has_gt[class_id]:
            values.append(tf.Summary.Value(tag='AP_VOC07/' + class_names[class_id],
                                           simple_value=results.ap07[class_id]))
            values.append(tf.Summary.Value(tag='AP_VOC2010/' + class_names[class_id],
                                           simple_value=results.ap10[class_id]))
    return tf.Summary(value=values)


def model_class_names(config, info, dataset_dir):
    """The dataset's names of the model's classes: ['none'] + info.class_names[1 + labels_offset:] (training
    with labels_offset k gave its labels k + 1, k + 2, ... the model's labels 1, 2, ...).

    UserError when their count is not the model's num_classes, or when they differ from the class names
    saved in the model's model_config.json.
    """
    offset = config['labels_offset']
    names = dataset_info.with_background(info.class_names[1 + offset:])
    if len(names) != config['num_classes']:
        offset_note = f' ({len(names)} after the labels_offset={offset} the model was trained with)' if offset else ''
        raise UserError(f'--dataset_dir={dataset_dir}: the dataset has {info.num_classes} classes with the '
                        f'background{offset_note}, the model {config["num_classes"]}; pass --num_classes or '
                        f'another checkpoint')
    if config['class_names_saved'] and names[1:] != config['class_names'][1:]:
        differences = ['label %d is %r in the dataset, %r in the model' % (label, ours, theirs)
                       for label, (ours, theirs) in enumerate(zip(names, config['class_names'])) if label and
                       ours != theirs]
        raise UserError(f'--dataset_dir={dataset_dir}: its classes are not those the model was trained on '
                        f'({"; ".join(differences)}); evaluate on records converted with the model\'s class list '
                        f'(tf_convert_data.py --labels_file), or evaluate a checkpoint trained on this dataset')
    return names


def new_checkpoints():
    """Every new checkpoint of --checkpoint_path's directory as training writes it, until the timeout."""
    directory = FLAGS.checkpoint_path if os.path.isdir(FLAGS.checkpoint_path) else \
        os.path.dirname(FLAGS.checkpoint_path)
    print('Waiting for checkpoints in %s' % directory, flush=True)
    for prefix in tf.train.checkpoints_iterator(directory, min_interval_secs=FLAGS.eval_interval_secs,
                                                timeout=FLAGS.wait_timeout_secs):
        if tf.io.gfile.exists(prefix + '.index'):
            yield prefix
        else:
            print('%s: deleted before its evaluation (training keeps only the newest); skipped' % prefix)


def report(prefix, step, results, num_images, elapsed, class_names, writer, images_summary):
    """Prints the table; writes the summaries (when writer) and --results_json (when set)."""
    print('%s (step %s): %d images in %.1f s (%.1f images/s)'
          % (prefix, step, num_images, elapsed, num_images / max(elapsed, 1e-9)))
    print(voc_eval.format_results_table(results, class_names), flush=True)
    if writer is not None:
        writer.add_summary(scalar_summary(results, class_names), step or 0)
        if images_summary is not None:
            writer.add_summary(images_summary, step or 0)
        writer.flush()
    if FLAGS.results_json:
        payload = voc_eval.results_as_dict(results, class_names)
        payload.update(checkpoint_path=prefix, global_step=step, dataset_dir=FLAGS.dataset_dir,
                       split=FLAGS.dataset_split_name, num_images=num_images, iou_threshold=FLAGS.matching_threshold)
        write_json_atomically(FLAGS.results_json, payload)


def checkpoints_to_evaluate():
    """The checkpoint of --checkpoint_path, or with --wait_for_checkpoints each new one (an iterator)."""
    if FLAGS.wait_for_checkpoints:
        return new_checkpoints()
    return iter([inference_model.resolve_checkpoint(FLAGS.checkpoint_path)])


def evaluate():
    """Evaluates the checkpoint, or each new one when waiting.

    The graph is built once, from the configuration saved beside the first checkpoint (training writes
    model_config.json before its first checkpoint, so waiting eval reads it only once one exists).
    """
    info = dataset_info.resolve_dataset_info(FLAGS.dataset_dir, FLAGS.dataset_name)
    prefixes = checkpoints_to_evaluate()
    first = next(prefixes, None)
    if first is None:
        print('No checkpoint appeared within --wait_timeout_secs=%s.' % FLAGS.wait_timeout_secs, file=sys.stderr)
        return
    config = inference_model.inference_config(first, inference_flags.model_overrides(FLAGS))
    class_names = model_class_names(config, info, FLAGS.dataset_dir)
    with tf.Graph().as_default():
        network, iterator_init, fetches, image_summary = build_eval_graph(
            config, FLAGS.dataset_dir, FLAGS.dataset_split_name, FLAGS.batch_size, FLAGS.num_readers,
            FLAGS.num_preprocessing_threads, FLAGS.data_format or nets_factory.default_data_format(),
            inference_flags.postprocess_options(FLAGS), FLAGS.num_summary_images)
        # Which weights the first checkpoint holds (moving averages or not) sets the saver for all.
        variables_map = inference_model.variables_to_restore(
            first, network, use_moving_averages=inference_flags.use_moving_averages(FLAGS))
        saver = tf.train.Saver(var_list=variables_map)
        writer = tf.summary.FileWriter(FLAGS.eval_dir) if FLAGS.eval_dir else None
        with tf.Session() as session:
            for prefix in itertools.chain([first], prefixes):
                inference_model.restore_checkpoint(session, saver, prefix, variables_map, config)
                start = time.time()
                try:
                    results, num_images, images_summary = run_split(
                        session, iterator_init, fetches, image_summary, config['num_classes'],
                        FLAGS.matching_threshold, FLAGS.max_num_batches)
                except tf.errors.OpError as err:
                    raise UserError(f'--dataset_dir={FLAGS.dataset_dir}: reading split '
                                    f'{FLAGS.dataset_split_name!r} failed: {err.message.splitlines()[0]}') from None
                report(prefix, inference_model.checkpoint_global_step(prefix), results, num_images,
                       time.time() - start, class_names, writer, images_summary)


if __name__ == '__main__':
    script_setup.run_main(evaluate, required_flags=('dataset_dir', 'checkpoint_path'))
