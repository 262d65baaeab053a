"""Evaluate an SSD checkpoint on a TFRecord split: per-class AP and mAP by the VOC2007 and VOC2010+ rules.

    python eval_ssd_network.py --dataset_dir=IMAGE/tfrecords --dataset_split_name=test \\
        --checkpoint_path=ckpt/fine_tuning --eval_dir=ckpt/eval [--results_json=ckpt/eval/results.json]

Restores the newest checkpoint of a directory (or the given one), runs the split once, decodes and NMSes
with the network's post-processing, prints the VOC table and COCO's figures (pycocotools' COCOeval), writes
TensorBoard summaries (mAP, per-class AP, COCO figures, per-class PR curves, images with true boxes in green
and predicted ones in red) to --eval_dir and, when asked, --results_json and PNG plots in --plot_dir.
--wait_for_checkpoints evaluates each new checkpoint that training writes, until stopped (Ctrl-C) or
--wait_timeout_secs pass without one. The model configuration is read from model_config.json beside the
(first) checkpoint; --model_name, --num_classes, --depth_multiplier, --anchor_set override it. The dataset's
classes must be the model's, after the labels_offset training applied (the ground truth gets it too).
--model evaluates a TFLite model of deployment/export_tflite.py instead (what int8 or float16 costs), with the
post-processing set at its export.
"""
import itertools
import os
import sys
import time

from utils import script_setup  # first: sets TensorFlow's log level before it loads
from absl import flags
import tensorflow.compat.v1 as tf

from datasets import bad_samples, dataset_info, record_check
from preprocessing import preprocessing_factory
from utils import checkpoints, coco_eval, devices, eval_report, eval_split, inference_flags, tflite_detector
from utils.errors import UserError
from utils.file_io import check_writable_file, make_writable_folder
from utils.model_config import ModelConfig, class_differences

WARP_RESIZE = 4   # SSD-Tensorflow's Resize enum value of a warp to the input size, its evaluation's default

# Data.
flags.DEFINE_string('dataset_dir', None, 'Directory of the TFRecord shards (and dataset_info.json).')
flags.DEFINE_string('dataset_name', None, 'Built-in class list for record directories without '
                    'dataset_info.json (pascalvoc_2007, pascalvoc_2012).')
flags.DEFINE_string('dataset_split_name', 'test', 'Split to evaluate.')
flags.DEFINE_integer('batch_size', 8, 'Images per batch.')
flags.DEFINE_integer('num_readers', 2, 'Shards read in parallel.')
flags.DEFINE_integer('num_preprocessing_threads', 2, 'Parallel decode / resize calls.')
flags.DEFINE_integer('max_num_batches', None, 'Stop after this many batches (default: the whole split).')
flags.DEFINE_bool('check_records', True, 'Read every shard of the split once before evaluating (framing, CRCs, '
                  'record count against dataset_info.json); a damaged one stops the run naming it.')
# Outputs.
flags.DEFINE_string('eval_dir', None, 'Directory for TensorBoard summaries.')
flags.DEFINE_string('results_json', None, 'Write per-class AP, mAP, the COCO figures, checkpoint, step and the '
                    'settings behind them here (an existing file is replaced).')
flags.DEFINE_bool('wait_for_checkpoints', False, 'Evaluate every new checkpoint until stopped.')
flags.DEFINE_integer('eval_interval_secs', 60, 'Minimum seconds between two evaluations when waiting.')
flags.DEFINE_integer('wait_timeout_secs', None, 'Stop waiting after this many seconds without a new '
                     'checkpoint (default: wait until stopped).')
flags.DEFINE_integer('num_summary_images', 4, 'Images with boxes written to TensorBoard per evaluation (0: none).')
flags.DEFINE_string('plot_dir', None, 'Write PNG files here: pr_<class>.png (precision/recall curve of each class '
                    'with ground truth) and detections.png (the first test images: green true positives, red false '
                    'positives scoring >= 0.5, grey missed ground truth). With --wait_for_checkpoints each '
                    'evaluation overwrites them.')
inference_flags.define_model_flags()
inference_flags.define_tflite_flag('evaluate (what int8 or float16 costs)')
inference_flags.define_postprocess_flags()
flags.adopt_module_key_flags(inference_flags)   # --help lists them with this script's own
flags.DEFINE_float('matching_threshold', 0.5, 'IoU at which a detection matches a ground truth, in (0, 1].')
# SSD-Tensorflow's evaluation flags, so that its commands run.
flags.DEFINE_bool('remove_difficult', True, 'Leave objects marked difficult out of the evaluation, by VOC\'s rule: '
                  'a detection of one is neither a true nor a false positive. False: they count as any other.')
flags.DEFINE_integer('eval_resize', WARP_RESIZE, f'SSD-Tensorflow\'s resize mode; only {WARP_RESIZE} (WARP_RESIZE: '
                     'the image warped to the network\'s input size, its default) is implemented.')
flags.DEFINE_integer('eval_image_size', None, 'The network\'s input side, if given (SSD300: 300); another size '
                     'is refused, the anchors being laid out for that one.')
flags.DEFINE_float('gpu_memory_fraction', None, 'Fraction of the GPU memory the evaluation may take.')
flags.DEFINE_string('preprocessing_name', None, 'SSD-Tensorflow\'s flag: ssd_300_vgg or ssd_512_vgg (both evaluate '
                    'with the same resize), if given.')
flags.DEFINE_string('master', '', 'SSD-Tensorflow\'s flag: only \'\' (evaluation runs in this process).')

def reader_from_flags(fv):
    """SplitReader of the data flags; UserError for a count that cannot work."""
    for name in ('batch_size', 'num_readers', 'num_preprocessing_threads'):
        if fv[name].value < 1:
            raise UserError(f'--{name}={fv[name].value}: must be >= 1')
    if fv.max_num_batches is not None and fv.max_num_batches < 1:
        raise UserError(f'--max_num_batches={fv.max_num_batches}: must be >= 1 (leave it out for the whole split)')
    return eval_split.SplitReader(fv.dataset_dir, fv.dataset_split_name, fv.batch_size, fv.num_readers,
                       fv.num_preprocessing_threads, fv.max_num_batches)


def check_eval_flags(fv):
    """UserError for a matching threshold, image count, --preprocessing_name or --master that cannot work; the
    output folders are made and the --results_json file checked, so that a bad path costs one line before the
    evaluation (or the wait for a checkpoint), not after it."""
    if fv.preprocessing_name:
        preprocessing_factory.get_preprocessing(fv.preprocessing_name, is_training=False)
    if fv.master:
        raise UserError(f'--master={fv.master}: evaluation runs in this process; leave the flag out')
    if not 0 < fv.matching_threshold <= 1:
        raise UserError(f'--matching_threshold={fv.matching_threshold:g}: must be in (0, 1] (an IoU; 0 would match '
                        f'any detection to any ground truth)')
    if fv.num_summary_images < 0:
        raise UserError(f'--num_summary_images={fv.num_summary_images}: must be >= 0 (0: none)')
    for flag in ('eval_dir', 'plot_dir'):
        if fv[flag].value:
            make_writable_folder(fv[flag].value, '--' + flag)
    if fv.results_json:
        check_writable_file(fv.results_json, '--results_json')


def check_ssd_tensorflow_flags(fv, image_size):
    """UserError for an --eval_resize or --eval_image_size this evaluation does not do."""
    if fv.eval_resize != WARP_RESIZE:
        raise UserError(f'--eval_resize={fv.eval_resize}: only {WARP_RESIZE} (WARP_RESIZE, SSD-Tensorflow\'s default: '
                        f'the image warped to the network\'s input) is implemented')
    if fv.eval_image_size not in (None, image_size[0]):
        raise UserError(f'--eval_image_size={fv.eval_image_size}: this network takes {image_size[0]}x{image_size[1]} '
                        f'inputs (its anchors are laid out for that size)')


def model_class_names(config, info, dataset_dir, saved_num_classes=None):
    """The dataset's names of the model's classes: ['none'] + info.class_names[1 + labels_offset:] (training
    with labels_offset k gave its labels k + 1, k + 2, ... the model's labels 1, 2, ...).

    UserError when their count is not the model's num_classes, or when they differ from the class names
    saved in the model's model_config.json. saved_num_classes: that file's class count (None without one),
    which says what can help: --num_classes only for a checkpoint without it.
    """
    offset = config.labels_offset
    names = dataset_info.with_background(info.class_names[1 + offset:])
    if len(names) != config.num_classes:
        offset_note = f' ({len(names)} after the labels_offset={offset} the model was trained with)' if offset else ''
        if saved_num_classes is None:
            advice = (f'a checkpoint of {len(names)} classes without model_config.json takes --num_classes='
                      f'{len(names)}; else evaluate the records it was trained on')
        elif saved_num_classes != config.num_classes:
            advice = f'its model_config.json says {saved_num_classes}: leave --num_classes out'
        else:
            advice = 'evaluate the records it was trained on, or a checkpoint trained on this dataset'
        raise UserError(f'--dataset_dir={dataset_dir}: the dataset has {info.num_classes} classes with the '
                        f'background{offset_note}, the model {config.num_classes}; {advice}')
    if config.names_from_file and tuple(names[1:]) != tuple(config.class_names[1:]):
        differences = class_differences(names, config.class_names)
        raise UserError(f'--dataset_dir={dataset_dir}: its classes are not those the model was trained on '
                        f'({"; ".join(differences)}); evaluate on records converted with the model\'s class list '
                        f'(tf_convert_data.py --labels_file), or evaluate a checkpoint trained on this dataset')
    return names


def watched_directory(checkpoint_path):
    """The folder whose checkpoints --wait_for_checkpoints evaluates: checkpoint_path itself, or its folder when
    it names a checkpoint (an existing prefix, or a name with '.ckpt' as model.ckpt-60). A path that does not
    exist yet is a train_dir training has still to make, not a prefix in its parent."""
    name = os.path.basename(os.path.normpath(checkpoint_path))
    if os.path.isdir(checkpoint_path) or not ('.ckpt' in name or os.path.isfile(checkpoint_path + '.index')):
        return checkpoint_path
    return os.path.dirname(checkpoint_path)


def new_checkpoints(checkpoint_path, interval_secs, timeout_secs):
    """Every new checkpoint of checkpoint_path's watched_directory as training writes it, until the timeout."""
    directory = watched_directory(checkpoint_path)
    print('Waiting for checkpoints in %s' % directory, flush=True)
    for prefix in tf.train.checkpoints_iterator(directory, min_interval_secs=interval_secs, timeout=timeout_secs):
        if tf.io.gfile.exists(prefix + '.index'):
            yield prefix
        else:
            print('%s: deleted before its evaluation (training keeps only the newest); skipped' % prefix)


def report(outcome, class_names, writer, results_json, plot_dir, run_facts):
    """Prints the tables; writes the summaries (when writer), results_json with the run_facts (dataset, split,
    matching and post-processing settings) added, and the plot_dir PNGs, each when set; then one line saying
    what went where, and that results_json replaced a file (an earlier evaluation's) when it did."""
    eval_report.print_tables(outcome, class_names, run_facts['split'], run_facts['iou_threshold'])
    written = []
    if writer is not None:
        eval_report.write_summaries(writer, outcome, class_names)
        written.append(f'TensorBoard summaries to {writer.get_logdir()}')
    if results_json:
        replaced = os.path.exists(results_json)
        eval_report.write_results_json(results_json, outcome, class_names, run_facts)
        written.append(f'results to {results_json}' + (' (replacing the file that was there)' if replaced else ''))
    if plot_dir:
        paths = eval_report.write_plots(plot_dir, outcome, class_names, eval_split.SUMMARY_SCORE_THRESHOLD)
        written.append(f'{len(paths)} PNG files to {plot_dir}')
    if written:
        print('Wrote ' + ', '.join(written), flush=True)


def checkpoints_to_evaluate(fv):
    """The checkpoint of --checkpoint_path, or with --wait_for_checkpoints each new one (an iterator)."""
    if fv.wait_for_checkpoints:
        return new_checkpoints(fv.checkpoint_path, fv.eval_interval_secs, fv.wait_timeout_secs)
    return iter([checkpoints.require_checkpoint(fv.checkpoint_path)])


def evaluate_one(session, graph, name, step, num_classes, fv):
    """Runs the split through the model of `graph` (the weights of checkpoint `name` restored, or a TFLite model),
    VOC and COCO metrics -> Outcome."""
    start = time.time()
    try:
        run = eval_split.run_split(session, graph, num_classes, fv.matching_threshold, fv.max_num_batches,
                                   fv.remove_difficult)
    except tf.errors.OpError as err:
        raise UserError(f'--dataset_dir={fv.dataset_dir}: reading split {fv.dataset_split_name!r} failed: '
                        f'{bad_samples.error_line(err)}') from None
    results = run.evaluator.compute()
    detections, ground_truth = run.evaluator.detections(), run.evaluator.ground_truth()
    coco = coco_eval.evaluate(detections, ground_truth, run.image_sizes, num_classes)
    return eval_report.Outcome(
        name, step, results, coco, (detections, ground_truth, results.matches),
        run.evaluator.num_images - len(run.skipped), time.time() - start, run.images_summary, run.skipped, run.images)


def evaluation_facts(fv, select_threshold, nms_threshold, select_top_k, keep_top_k):
    """Every setting that changes the figures, so that two results files tell how they differ."""
    return dict(dataset_dir=fv.dataset_dir, split=fv.dataset_split_name, iou_threshold=fv.matching_threshold,
                remove_difficult=fv.remove_difficult, select_threshold=select_threshold, nms_threshold=nms_threshold,
                select_top_k=select_top_k, keep_top_k=keep_top_k)


def check_tflite_flags(fv):
    """UserError for --model with a flag it cannot honour."""
    inference_flags.check_tflite_flags(fv)
    if fv.wait_for_checkpoints:
        raise UserError('--wait_for_checkpoints watches a train_dir; with --model, evaluate the model once')


def tflite_labels_offset(model_names, dataset_names, fv):
    """The labels_offset a TFLite model was trained with, told by its class names (the .labels.txt beside it,
    background first): the dataset's names with the first k object classes left out; UserError when no k
    fits, naming the labels that differ (k = 0) or the counts."""
    model_objects, dataset_objects = tuple(model_names[1:]), tuple(dataset_names[1:])
    offset = len(dataset_objects) - len(model_objects)
    if offset >= 0 and dataset_objects[offset:] == model_objects:
        return offset
    if offset == 0:
        differences = class_differences(dataset_names, model_names)
    else:
        differences = [f'{len(dataset_names)} classes with the background in the dataset, {len(model_names)} in the '
                       f'model']
    raise UserError(f'--dataset_dir={fv.dataset_dir}: its classes are not those of --model={fv.model} '
                    f'({"; ".join(differences)}); evaluate it on the records it was trained on')


def open_tflite_model(fv, info):
    """--model's (detector, class names, labels_offset, run_facts with its post-processing); UserError for a
    file that is no TFLite model, an --eval_image_size it does not take, or class names that are not the
    dataset's after the labels_offset they tell. Called before the records are read (minutes on a large split)."""
    detector = tflite_detector.TFLiteDetector(fv.model)
    check_ssd_tensorflow_flags(fv, detector.image_size)
    class_names = detector.class_names()
    labels_offset = tflite_labels_offset(class_names, info.class_names, fv)
    options = detector.postprocess   # float32 in the model: rounded, 0.01 rather than 0.009999999776
    run_facts = evaluation_facts(fv, round(options['nms_score_threshold'], 6), round(options['nms_iou_threshold'], 6),
                                 None, options['max_detections'])
    run_facts['model'] = fv.model
    return detector, class_names, labels_offset, run_facts


def evaluate_tflite(fv, reader, model):
    """The TFLite model (open_tflite_model's) on the split, reported as a checkpoint is (no images in
    TensorBoard)."""
    detector, class_names, labels_offset, run_facts = model
    with tf.Graph().as_default():
        graph = eval_split.build_tflite_eval_graph(detector, reader, labels_offset,
                                                   eval_split.NUM_PLOT_IMAGES if fv.plot_dir else 0)
        writer = tf.summary.FileWriter(fv.eval_dir) if fv.eval_dir else None
        with tf.Session(config=devices.session_config()) as session:
            outcome = evaluate_one(session, graph, fv.model, None, len(class_names), fv)
    report(outcome, class_names, writer, fv.results_json, fv.plot_dir, run_facts)


def main(fv):
    """Evaluates the checkpoint, or each new one when waiting.

    The graph is built once, from the configuration saved beside the first checkpoint (training writes
    model_config.json before its first checkpoint, so waiting eval reads it only once one exists). The
    records' classes are checked against the model's before each checkpoint's evaluation.
    """
    inference_flags.check_model_source(fv)
    if fv.model:
        check_tflite_flags(fv)
    reader = reader_from_flags(fv)
    detect_options = inference_flags.postprocess_options(fv)
    check_eval_flags(fv)
    info = dataset_info.resolve_dataset_info(fv.dataset_dir, fv.dataset_name)
    tflite = open_tflite_model(fv, info) if fv.model else None
    # Every record read once: a damaged or short shard stops here, naming it, before any graph is built.
    if fv.check_records:
        print(record_check.check_split(fv.dataset_dir, fv.dataset_split_name), file=sys.stderr)
    if tflite:
        evaluate_tflite(fv, reader, tflite)
        return
    prefixes = checkpoints_to_evaluate(fv)
    first = next(prefixes, None)
    if first is None:
        print('No checkpoint appeared within --wait_timeout_secs=%s.' % fv.wait_timeout_secs, file=sys.stderr)
        return
    config = inference_flags.model_config(fv, first, inference_flags.run_data_format(fv))
    check_ssd_tensorflow_flags(fv, config.image_size)
    saved = ModelConfig.load(first)

    def records_class_names():
        """The model's classes as the records name them now: records converted again while eval waited (for the
        first checkpoint too) are checked as at the start."""
        return model_class_names(config, dataset_info.resolve_dataset_info(fv.dataset_dir, fv.dataset_name),
                                 fv.dataset_dir, saved.num_classes if saved else None)
    records_class_names()   # before the graph is built
    run_facts = evaluation_facts(fv, fv.select_threshold, fv.nms_threshold, fv.select_top_k, fv.keep_top_k)
    with tf.Graph().as_default():
        graph = eval_split.build_eval_graph(config, reader, detect_options, fv.num_summary_images,
                                            eval_split.NUM_PLOT_IMAGES if fv.plot_dir else 0)
        # Which weights the first checkpoint holds (moving averages or not) sets the saver for all.
        variables_map = inference_flags.weights_to_restore(fv, first, graph.network)
        saver = tf.train.Saver(var_list=variables_map)
        writer = tf.summary.FileWriter(fv.eval_dir) if fv.eval_dir else None
        with tf.Session(config=devices.session_config(fv.gpu_memory_fraction)) as session:
            for prefix in itertools.chain([first], prefixes):
                class_names = records_class_names()
                checkpoints.restore_for_inference(session, saver, prefix, variables_map, config)
                outcome = evaluate_one(session, graph, prefix, checkpoints.checkpoint_global_step(prefix),
                                       config.num_classes, fv)
                report(outcome, class_names, writer, fv.results_json, fv.plot_dir, run_facts)


if __name__ == '__main__':
    script_setup.run_main(main, flags.FLAGS, required_flags=('dataset_dir',))
