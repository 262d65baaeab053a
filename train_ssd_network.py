"""Train an SSD network on TFRecords (SSD-Tensorflow's flags, TF-Slim's training loop).

    python train_ssd_network.py --pretrained_path=./ckpt/pre_trained --train_dir=./ckpt/fine_tuning \\
        --dataset_dir=./IMAGE/tfrecords

With no flags it trains on the demo data (generated and converted into ./IMAGE on first use). Ctrl-C
saves a checkpoint and exits; the same command resumes. See README.md for the workflow.
"""
import dataclasses
import functools
import os
import sys
import warnings

from utils import script_setup  # noqa: F401  first: TF_CPP_MIN_LOG_LEVEL, TF_ENABLE_ONEDNN_OPTS before TF loads
from absl import app, flags, logging
import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets import dataset_info as ds_info
from datasets import label_offset, tfrecord_pipeline
from nets import nets_factory
from preprocessing import preprocessing_factory, ssd_vgg_preprocessing
from utils import clones, distributed, restore, startup_report, train_tools
from utils import learning_schedules as schedules
from utils import model_config as model_config_lib
from utils.errors import UserError
from utils.train_plan import TrainPlan

DEFAULT_DATASET_DIR = './IMAGE/tfrecords'
DEMO_IMAGE_DIR = 'IMAGE'
DEFAULT_PRETRAINED_PATH = './ckpt/pre_trained'


def define_flags(fv=flags.FLAGS):
    """Define the training flags on `fv` (SSD-Tensorflow's names; course defaults)."""
    d_float, d_int, d_str, d_bool, d_list = (functools.partial(define, flag_values=fv) for define in (
        flags.DEFINE_float, flags.DEFINE_integer, flags.DEFINE_string, flags.DEFINE_bool, flags.DEFINE_list))
    # SSD network and loss.
    d_float('loss_alpha', 1.0, 'Weight of the localisation loss.')
    d_float('negative_ratio', 3.0, 'Hard negatives kept per positive anchor.')
    d_float('match_threshold', 0.5, 'IoU from which an anchor is matched to a box.')
    d_bool('ignore_difficult', True, 'Anchors matched to difficult boxes are neither positive nor negative; '
           '--noignore_difficult trains on them as positives.')
    d_float('depth_multiplier', 1.0, 'Channel multiplier of every layer (< 1 for small, fast models).')
    d_str('anchor_set', 'ssd_tensorflow', 'Anchor sizes: ssd_tensorflow (published checkpoint) or caffe.')
    d_str('data_format', None, 'NHWC or NCHW; default NCHW on GPU, NHWC on CPU.')
    # General.
    d_str('train_dir', './ckpt/fine_tuning', 'Where checkpoints, event logs and model_config.json go.')
    d_int('num_clones', 1, 'Model clones (data-parallel replicas in this process).')
    d_bool('clone_on_cpu', False, 'Put the clones on CPUs even when GPUs are visible.')
    d_int('num_readers', 4, 'TFRecord files read in parallel.')
    d_int('num_preprocessing_threads', 4, 'Parallel calls of the preprocessing map.')
    d_int('log_every_n_steps', 10, 'Log losses and speed every n steps (0: never).')
    d_int('save_summaries_secs', 600, 'Write TensorBoard summaries every n seconds (0: never).')
    d_int('save_interval_secs', 600, 'Save a checkpoint every n seconds (0: only at the end).')
    d_int('save_every_n_steps', 0, 'Also save a checkpoint every n steps (0: off).')
    d_float('gpu_memory_fraction', 0.8, 'Fraction of GPU memory to allocate.')
    # Optimizer.
    d_float('weight_decay', 0.0005, 'L2 weight decay on the conv weights.')
    d_str('optimizer', 'adam', 'One of ' + ', '.join(schedules.OPTIMIZER_NAMES) + '.')
    for field in dataclasses.fields(schedules.OptimizerConfig):
        if field.name != 'optimizer':
            d_float(field.name, field.default, f'Optimizer hyper-parameter {field.name}.')
    # Learning rate.
    d_str('learning_rate_decay_type', 'exponential', 'One of ' + ', '.join(schedules.DECAY_TYPES) + '.')
    d_float('learning_rate', 0.001, 'Initial learning rate.')
    d_float('end_learning_rate', 0.0001, 'Final rate of the polynomial and cosine schedules.')
    d_float('label_smoothing', 0.0, 'Label smoothing of the classification targets.')
    d_float('learning_rate_decay_factor', 0.94, 'Decay factor (exponential; piecewise default values).')
    d_float('num_epochs_per_decay', 2.0, 'Epochs per decay period (exponential, polynomial, cosine; for '
            'polynomial and cosine, the epochs over which the rate falls to the end rate, then stays there).')
    d_float('moving_average_decay', None, 'Keep moving averages of the weights with this decay.')
    d_list('learning_rate_boundaries', ['80000', '100000'], 'Piecewise: steps where the rate changes.')
    d_list('learning_rate_values', [], 'Piecewise: the rates (one more than the boundaries); '
           'default learning_rate * learning_rate_decay_factor^i.')
    d_int('warmup_steps', 0, 'Linear warm-up of the rate over the first n steps.')
    # Dataset.
    d_str('dataset_name', None, 'Built-in class list (pascalvoc_2007, pascalvoc_2012) for a record folder '
          'without dataset_info.json; with one, it must name that dataset.')
    d_int('num_classes', None, 'Classes with background; must match dataset_info.json when given.')
    d_str('dataset_split_name', 'train', 'Split to train on.')
    d_str('dataset_dir', DEFAULT_DATASET_DIR, 'Folder of TFRecords and dataset_info.json.')
    d_int('labels_offset', 0, 'Subtracted from record labels (boxes falling to 0 or below are dropped).')
    d_str('model_name', 'ssd_300_vgg', 'One of ' + ', '.join(nets_factory.MODEL_NAMES) + '.')
    d_str('preprocessing_name', None, 'Preprocessing; default: the model name.')
    d_int('batch_size', 32, 'Images per step (all clones together).')
    d_int('train_image_size', None, 'Input side; must be the model\'s (300 or 512).')
    d_int('max_number_of_steps', None, 'Stop at this global step (default: never).')
    # Fine-tuning.
    d_str('pretrained_path', DEFAULT_PRETRAINED_PATH, 'Checkpoint (prefix or folder) to start from when '
          'train_dir has none; an empty folder means from scratch.')
    flags.DEFINE_alias('checkpoint_path', 'pretrained_path', flag_values=fv)
    d_str('checkpoint_model_scope', None, 'Model scope inside the checkpoint (e.g. vgg_16).')
    d_str('checkpoint_exclude_scopes', None, 'Comma-separated scopes not restored from it.')
    d_str('trainable_scopes', None, 'Comma-separated scopes to train (default: all).')
    d_bool('ignore_missing_vars', False, 'Skip variables the checkpoint lacks.')
    # Several machines (TensorFlow's parameter servers and workers); without these, one process.
    d_str('ps_hosts', '', 'Comma-separated host:port of the parameter servers.')
    d_str('worker_hosts', '', 'Comma-separated host:port of the workers (worker 0 is the chief).')
    d_str('job_name', None, 'This process\'s job: ps or worker.')
    d_int('task', 0, 'This process\'s index in its job.')
    d_bool('sync_replicas', False, 'Aggregate the workers\' gradients each step (default: asynchronous).')
    d_int('replicas_to_aggregate', None, 'Gradients per synchronous step (default: the number of workers).')
    d_int('cluster_wait_secs', 600, 'How long a worker waits for the parameter servers and the chief, and '
          'the longest one call may block on the cluster (then the run stops with an error).')


def _need(condition, message):
    if not condition:
        raise UserError(message)


def _check_ranges(fv):
    """Values that are wrong whatever the dataset."""
    _need(fv.depth_multiplier > 0, f'--depth_multiplier={fv.depth_multiplier}: must be > 0')
    _need(fv.anchor_set in ('ssd_tensorflow', 'caffe'), f'--anchor_set={fv.anchor_set}: use ssd_tensorflow or caffe')
    _need(fv.data_format in (None, 'NHWC', 'NCHW'), f'--data_format={fv.data_format}: use NHWC or NCHW')
    _need(0 < fv.match_threshold <= 1, f'--match_threshold={fv.match_threshold}: must be in (0, 1]')
    _need(fv.negative_ratio > 0, f'--negative_ratio={fv.negative_ratio}: must be > 0')
    _need(fv.loss_alpha >= 0, f'--loss_alpha={fv.loss_alpha}: must be >= 0')
    _need(0 <= fv.label_smoothing < 1, f'--label_smoothing={fv.label_smoothing}: must be in [0, 1)')
    _need(fv.weight_decay >= 0, f'--weight_decay={fv.weight_decay}: must be >= 0')
    _need(fv.moving_average_decay is None or 0 < fv.moving_average_decay < 1,
          f'--moving_average_decay={fv.moving_average_decay}: must be in (0, 1)')
    _need(0 < fv.gpu_memory_fraction <= 1, f'--gpu_memory_fraction={fv.gpu_memory_fraction}: must be in (0, 1]')
    for name in ('num_readers', 'num_preprocessing_threads'):
        _need(fv[name].value >= 1, f'--{name}={fv[name].value}: must be >= 1')
    for name in ('log_every_n_steps', 'save_summaries_secs', 'save_interval_secs', 'save_every_n_steps',
                 'labels_offset'):
        _need(fv[name].value >= 0, f'--{name}={fv[name].value}: must be >= 0')
    _need(fv.max_number_of_steps is None or fv.max_number_of_steps > 0,
          f'--max_number_of_steps={fv.max_number_of_steps}: must be > 0')
    _need(fv.model_name in nets_factory.MODEL_NAMES,
          f'--model_name={fv.model_name}: unknown; use one of {", ".join(nets_factory.MODEL_NAMES)}')


def _same_path(path, other):
    return os.path.normpath(path) == os.path.normpath(other)


def _cluster(fv):
    """(ps_hosts, worker_hosts, in_cluster) from the checked cluster flags."""
    ps_hosts = distributed.parse_hosts(fv.ps_hosts, 'ps_hosts')
    worker_hosts = distributed.parse_hosts(fv.worker_hosts, 'worker_hosts')
    return ps_hosts, worker_hosts, distributed.check_cluster_settings(
        ps_hosts, worker_hosts, fv.job_name, fv.task, fv.sync_replicas, fv.replicas_to_aggregate)


def _values(fv, config_class):
    """{field: flag value} for a dataclass whose field names are flag names."""
    return {field.name: fv[field.name].value for field in dataclasses.fields(config_class)}


def _dataset_dir(fv, log_fn):
    """--dataset_dir; the default folder gets the demo dataset (generated and converted) on first use."""
    if _same_path(fv.dataset_dir, DEFAULT_DATASET_DIR):
        from datasets import demo_dataset  # needs PIL, only here
        demo_dataset.ensure_demo_dataset(DEMO_IMAGE_DIR, fv.dataset_dir, log_fn)
    _need(os.path.isdir(fv.dataset_dir), f'--dataset_dir={fv.dataset_dir}: no such directory')
    return fv.dataset_dir


def _dataset_info(dataset_dir, dataset_name):
    """dataset_info.json, or without it the built-in class list --dataset_name names; with the json,
    --dataset_name must be the dataset's name or a built-in list equal to its classes."""
    if not dataset_name:
        return ds_info.load_dataset_info(dataset_dir)
    info = ds_info.resolve_dataset_info(dataset_dir, dataset_name)
    builtin = ds_info.builtin_class_names(dataset_name)
    _need(dataset_name == info.name or (builtin is not None and info.class_names == ds_info.with_background(builtin)),
          f'--dataset_name={dataset_name}: {dataset_dir} holds the dataset {info.name!r} ({info.num_classes - 1} '
          f'classes); the flag only names a built-in class list for a folder without {ds_info.INFO_FILENAME}')
    return info


def check_flags(fv, log_fn=logging.info):
    """Step 1: every check that needs no graph, in flag order of importance; returns the TrainPlan.

    Raises UserError (one line naming the flag) at the first problem."""
    _check_ranges(fv)
    ps_hosts, worker_hosts, in_cluster = _cluster(fv)
    is_chief = not in_cluster or fv.task == 0
    schedule = schedules.schedule_from_values(_values(fv, schedules.ScheduleConfig))
    optimizer = schedules.OptimizerConfig(**_values(fv, schedules.OptimizerConfig))
    schedules.check_optimizer(optimizer)
    num_gpus = len(tf.config.list_physical_devices('GPU'))
    clones.check_clone_settings(fv.batch_size, fv.num_clones, num_gpus, fv.clone_on_cpu)
    use_gpus = num_gpus > 0 and not fv.clone_on_cpu
    data_format = fv.data_format or ('NCHW' if use_gpus else 'NHWC')
    _need(data_format == 'NHWC' or use_gpus, '--data_format=NCHW: needs a GPU (CPU kernels run NHWC)')

    dataset_dir = _dataset_dir(fv, log_fn)
    info = _dataset_info(dataset_dir, fv.dataset_name)
    shards = ds_info.list_shards(dataset_dir, fv.dataset_split_name)
    num_samples = info.num_samples.get(fv.dataset_split_name, 0)
    _need(num_samples > 0, f'{dataset_dir}: {ds_info.INFO_FILENAME} counts no samples for split '
                           f'{fv.dataset_split_name!r}')
    _need(fv.labels_offset < info.num_classes - 1,
          f'--labels_offset={fv.labels_offset}: must leave at least one class of {info.num_classes - 1}')
    num_classes = info.num_classes - fv.labels_offset
    _need(fv.num_classes is None or fv.num_classes == num_classes,
          f'--num_classes={fv.num_classes}: the dataset in {dataset_dir} has {num_classes} (background included)')
    net = nets_factory.get_network(fv.model_name, num_classes, fv.depth_multiplier, fv.anchor_set)
    _need(fv.train_image_size in (None, net.default_image_size),
          f'--train_image_size={fv.train_image_size}: {fv.model_name} takes {net.default_image_size}x'
          f'{net.default_image_size} inputs (its anchors are laid out for that size)')
    preprocess_fn = preprocessing_factory.get_preprocessing(fv.preprocessing_name or fv.model_name, True)

    # Only the chief loads weights (the others receive them through the parameter servers); a checkpoint
    # to resume wins, and --pretrained_path is then not looked at.
    resume_from = restore.latest_train_checkpoint(fv.train_dir) if is_chief else None
    pretrained = restore.resolve_pretrained(fv.pretrained_path, missing_ok=_same_path(
        fv.pretrained_path, DEFAULT_PRETRAINED_PATH)) if is_chief and not resume_from else None
    config = {'model_name': fv.model_name, 'num_classes': num_classes,
              'class_names': ['none'] + list(info.class_names[1 + fv.labels_offset:]),
              'depth_multiplier': fv.depth_multiplier, 'anchor_set': fv.anchor_set,
              'image_size': list(net.params.img_shape), 'data_format': data_format,
              'labels_offset': fv.labels_offset}
    if resume_from:
        model_config_lib.check_resumable(fv.train_dir, config)
    # Images behind one global step: one worker's batch, or replicas_to_aggregate batches in sync mode.
    sync_replicas = (fv.replicas_to_aggregate or len(worker_hosts)) if fv.sync_replicas else 0
    return TrainPlan(
        net=net, data_format=data_format, model_config=config, dataset_dir=dataset_dir,
        split_name=fv.dataset_split_name, info=info, shards=shards, num_samples=num_samples,
        preprocess_fn=preprocess_fn, schedule=schedule, optimizer=optimizer, decay_steps=schedules.decay_steps_for(
            num_samples, fv.batch_size * max(sync_replicas, 1), fv.num_epochs_per_decay),
        resume_from=resume_from, pretrained=pretrained, use_gpus=use_gpus,
        deployment=None if in_cluster else clones.local_deployment(fv.num_clones, use_gpus),
        ps_hosts=tuple(ps_hosts), worker_hosts=tuple(worker_hosts), sync_replicas=sync_replicas)


def _input_batch(plan, fv):
    """One batch dict from the TFRecord pipeline with the anchor targets."""
    target_encoder = plan.net.target_encoder(match_threshold=fv.match_threshold,
                                            ignore_difficult=fv.ignore_difficult)

    def encode_fn(labels, boxes, difficult):
        return target_encoder(*label_offset.apply_labels_offset(labels, boxes, difficult, fv.labels_offset))
    dataset = tfrecord_pipeline.make_dataset(plan.shards, plan.preprocess_fn, tfrecord_pipeline.PipelineConfig(
        fv.batch_size, out_shape=plan.net.params.img_shape, num_readers=fv.num_readers,
        num_parallel_calls=fv.num_preprocessing_threads), encode_fn=encode_fn)
    return tf.data.make_one_shot_iterator(dataset).get_next()


def _report(plan, fv):
    return startup_report.training_report(plan, fv.batch_size, fv.weight_decay, fv.moving_average_decay,
                                          fv.trainable_scopes, fv.max_number_of_steps, fv.checkpoint_model_scope,
                                          fv.train_dir)


def announce(plan, fv):
    """Step 2: log the start-up report (saved in train_dir by train(), once the graph checks pass)."""
    logging.info('Start-up report\n%s', _report(plan, fv))


def train(plan, fv, stop_request):
    """Steps 3-5: the graph for `plan` (inputs, clones, learning rate, optimizer, restore chain); then the
    chief saves training_config.txt and model_config.json in train_dir, and slim.learning.train runs.
    Returns the TrainStep. A problem found while building the graph raises UserError before any file is
    written, so a refused run leaves train_dir as it was."""
    deployment, net = plan.deployment, plan.net
    with tf.Graph().as_default():
        with tf.device(deployment.device_fns[0]):
            global_step = tf.train.get_or_create_global_step()
        with tf.device(deployment.input_device), tf.name_scope('inputs'):
            batch = _input_batch(plan, fv)
        clone_fn = clones.ssd_clone_fn(net, fv.weight_decay, plan.data_format, fv.negative_ratio,
                                       fv.loss_alpha, fv.label_smoothing)
        clone_list = clones.create_clones(clone_fn, clones.split_batch(batch, fv.num_clones), deployment.device_fns)
        model_variables = tf.model_variables(net.scope)
        with tf.device(deployment.device_fns[0]):
            learning_rate = schedules.learning_rate_tensor(plan.schedule, global_step, plan.decay_steps)
            train_op = train_tools.make_train_op(
                clone_list, schedules.make_optimizer(plan.optimizer, learning_rate), global_step,
                restore.variables_to_train(fv.trainable_scopes), model_variables, fv.moving_average_decay,
                (plan.sync_replicas, len(plan.worker_hosts)) if plan.sync_replicas else None)
            cluster_stop = (distributed.ClusterStop(len(plan.worker_hosts), train_op.sync_optimizer)
                            if plan.in_cluster else None)
        losses = train_tools.logged_losses(clone_list, train_op.total_loss)
        summary_op = train_tools.training_summaries(losses, learning_rate, [train_tools.input_image_summary(
            batch['image'], batch['gt_boxes'], ssd_vgg_preprocessing.VGG_MEAN_RGB)])
        init_fn = restore.restore_chain(
            plan.resume_from, plan.pretrained, model_variables, net.scope, fv.checkpoint_model_scope,
            restore.split_scopes(fv.checkpoint_exclude_scopes), fv.ignore_missing_vars, train_op.after_restore_op,
            logging.info) if deployment.is_chief else None
        saver = (train_tools.make_saver(saver_class=distributed.ChiefSaver, cluster_stop=cluster_stop)
                 if cluster_stop else train_tools.make_saver())
        step_fn = train_tools.TrainStep(
            losses, learning_rate, train_tools.weights_finite_op(tf.trainable_variables()), fv.batch_size,
            fv.log_every_n_steps, fv.max_number_of_steps, stop_request,
            saver=saver if deployment.is_chief else None,
            save_path=os.path.join(fv.train_dir, train_tools.CHECKPOINT_BASENAME),
            save_interval_secs=fv.save_interval_secs, save_every_n_steps=fv.save_every_n_steps,
            summary_op=summary_op if deployment.is_chief else None, save_summaries_secs=fv.save_summaries_secs,
            cluster_stop=cluster_stop)
        config = train_tools.session_config(fv.gpu_memory_fraction, deployment.cpu_devices, deployment.device_filters,
                                            fv.cluster_wait_secs if plan.in_cluster else 0)
        if deployment.is_chief:
            startup_report.write_report(fv.train_dir, _report(plan, fv), fv.flags_into_string().splitlines())
            model_config_lib.save_model_config(fv.train_dir, plan.model_config)
        else:
            distributed.wait_until_initialised(deployment.master, config, fv.cluster_wait_secs,
                                               interrupted=lambda: stop_request.requested)
        slim.learning.train(
            train_op.train_tensor, logdir=fv.train_dir, train_step_fn=step_fn, train_step_kwargs={},
            master=deployment.master, is_chief=deployment.is_chief, global_step=global_step, init_fn=init_fn,
            summary_op=None, save_summaries_secs=fv.save_summaries_secs, saver=saver, save_interval_secs=0,
            session_config=config, sync_optimizer=train_op.sync_optimizer)
    return step_fn


def _setup_logging():
    quiet = tf.get_logger().level
    tf.get_logger().setLevel('ERROR')  # disable_v2_behavior's deprecation notes are not for users
    tf.disable_v2_behavior()
    tf.get_logger().setLevel(quiet)
    tf.get_logger().propagate = False  # TF's logger prints itself; absl's root handler would repeat each line
    logging.set_verbosity(logging.INFO)
    # Noise from tf-slim's supervisor closing its summary writer twice.
    warnings.filterwarnings('ignore', message='Attempting to use a closed FileWriter')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    _setup_logging()
    fv, program = flags.FLAGS, os.path.basename(sys.argv[0])
    stop_request = train_tools.StopRequest()
    try:
        if fv.job_name == 'ps':
            distributed.serve_parameters(*_cluster(fv)[:2], fv.task)
            return 0
        plan = check_flags(fv)
        if plan.in_cluster:  # the worker's server lives as long as `server`
            server, deployment = distributed.join_cluster(
                plan.ps_hosts, plan.worker_hosts, fv.task, fv.num_clones, plan.use_gpus, train_tools.session_config(
                    fv.gpu_memory_fraction, clones.cpu_device_count(fv.num_clones, plan.use_gpus)),
                fv.cluster_wait_secs)
            plan = dataclasses.replace(plan, deployment=deployment)
        announce(plan, fv)
        stop_request.install()
        step_fn = stop_request.run(lambda: train(plan, fv, stop_request))
    except UserError as err:
        print(f'{program}: error: {err}', file=sys.stderr)
        return 1
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as err:
        print(f'{program}: error: {distributed.lost_cluster_message(err)}', file=sys.stderr)
        if stop_request.abandoned:  # the training thread is stuck closing its session on the dead task
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1
    except KeyboardInterrupt:
        print(f'{program}: interrupted before training started', file=sys.stderr)
        return 130
    if stop_request.requested:
        latest = restore.latest_train_checkpoint(fv.train_dir) if plan.deployment.is_chief else None
        logging.info('Stopped by %s at step %s%s; run the same command to resume', stop_request.signal_name,
                     step_fn.current_step, f', checkpoint {latest}' if latest else '')
    return 0


if __name__ == '__main__':
    define_flags()
    app.run(main)
