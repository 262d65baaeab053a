"""Train an SSD network on TFRecords (SSD-Tensorflow's flags, TF-Slim's training loop).

    python train_ssd_network.py --pretrained_path=./ckpt/pre_trained --train_dir=./ckpt/fine_tuning \\
        --dataset_dir=./IMAGE/tfrecords

With no flags it trains on your records in ./IMAGE/tfrecords (README sections 1-2 make them). The demo:

    python train_ssd_network.py --flagfile=configs/demo_cpu.flags

trains on the demo data in ./demo (generated and converted on first use) into ./ckpt/demo. Ctrl-C saves a
checkpoint and exits; the same command resumes. See README.md for the workflow.
"""
import contextlib
import dataclasses
import functools
import os
import time
import warnings

from utils import host
if __name__ == '__main__':
    host.restart_with_huge_page_malloc()  # first, while the process is small: glibc reads it only at start
from utils import script_setup  # noqa: E402  TF_CPP_MIN_LOG_LEVEL, TF_ENABLE_ONEDNN_OPTS before TF loads
from absl import flags, logging
import tensorflow.compat.v1 as tf
import tf_slim as slim

from datasets import bad_samples, record_check, tfrecord_pipeline
from nets import nets_factory
from preprocessing import ssd_vgg_preprocessing
from utils import checkpoints, clones, devices, distributed, file_io, resume, startup_report, step_policies, \
    train_plan, train_tools
from utils import learning_schedules as schedules
from utils.errors import UserError
from utils.model_config import ModelConfig
from utils.stop_request import StopRequest

# The training session gets the intra-op thread pool its ConfigProto asks for (the towers run one thread per op,
# utils/devices.cpu_towers); otherwise the process's first device fixes one pool for every later session. Read
# when TensorFlow creates its first device, so set here, before any.
os.environ.setdefault('TF_OVERRIDE_GLOBAL_THREADPOOL', '1')

DEFAULT_DATASET_DIR = './IMAGE/tfrecords'
DEMO_IMAGE_DIR = 'demo'                      # configs/demo_cpu.flags trains on DEMO_DATASET_DIR
DEMO_DATASET_DIR = './demo/tfrecords'
DEFAULT_PRETRAINED_PATH = './ckpt/pre_trained'


def _define_from_dataclass(config_class, fv, skip=()):
    """One flag per field of `config_class` (field name = flag name; type, default and help from the field)."""
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        help_text = field.metadata.get('help', f'Optimizer hyper-parameter {field.name}.')
        if isinstance(field.default, tuple):
            flags.DEFINE_list(field.name, [str(v) for v in field.default], help_text, flag_values=fv)
        else:
            define = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}
            define[type(field.default)](field.name, field.default, help_text, flag_values=fv)


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
    d_str('anchor_set', 'ssd_tensorflow', 'Anchor sizes: ' + ' or '.join(nets_factory.ANCHOR_SETS) + '.')
    d_str('anchor_sizes', None, 'Per-layer anchor sizes in pixels of the network input, one more than its feature '
          'layers (SSD300: 7, e.g. 21,45,99,153,207,261,315), replacing --anchor_set\'s; or auto: fitted to the '
          'training boxes (best possible recall, see the start-up report\'s anchor fit).')
    d_str('data_format', None, 'NHWC or NCHW; default NCHW on GPU, NHWC on CPU.')
    d_bool('bfloat16', False, 'CPU only, where it has AVX512_BF16 or AMX: convolutions and matmuls in bfloat16 '
           '(oneDNN\'s auto mixed precision; variables stay float32). Faster (1.66x at depth 1.0, batch 8 on an '
           'AVX512_BF16 EPYC), with bfloat16\'s rounding.')
    # General.
    d_str('train_dir', './ckpt/fine_tuning', 'Where checkpoints, event logs and model_config.json go.')
    d_int('num_clones', 1, 'Model clones (data-parallel replicas in this process). Unset, a network with no wide '
          'layer on a CPU with AVX2 trains as one single-threaded clone per core.')
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
    _define_from_dataclass(schedules.OptimizerConfig, fv)
    # Learning rate.
    _define_from_dataclass(schedules.ScheduleConfig, fv)
    d_float('label_smoothing', 0.0, 'Label smoothing of the classification targets.')
    d_float('moving_average_decay', None, 'Keep moving averages of the weights with this decay.')
    # Dataset.
    d_str('dataset_name', None, 'Built-in class list (pascalvoc_2007, pascalvoc_2012) for a record folder '
          'without dataset_info.json; with one, it must name that dataset.')
    d_int('num_classes', None, 'Classes with background; must match dataset_info.json when given.')
    d_str('dataset_split_name', 'train', 'Split to train on.')
    d_str('dataset_dir', DEFAULT_DATASET_DIR, 'Folder of TFRecords and dataset_info.json.')
    d_bool('check_records', True, 'Read every shard of the split once before training (framing, CRCs, record '
           'count against dataset_info.json); a damaged one stops the run naming it.')
    d_float('max_bad_sample_fraction', 0.01, 'Samples that cannot be decoded are skipped and counted; more than '
            'this fraction of those read (of at least one epoch) stops the run.')
    flags.DEFINE_enum('cache_images', 'auto', train_plan.CACHE_IMAGES_MODES, 'Keep the decoded images in memory '
                      'after the first epoch: auto when they take at most a quarter of the memory available at '
                      'start-up (the start-up report says which), always, or never.', flag_values=fv)
    d_int('labels_offset', 0, 'Subtracted from record labels (boxes falling to 0 or below are dropped).')
    d_str('model_name', 'ssd_300_vgg', 'One of ' + ', '.join(nets_factory.MODEL_NAMES) + '.')
    d_str('preprocessing_name', None, 'Preprocessing; default: the model name.')
    d_int('batch_size', 32, 'Images per step (all clones together).')
    d_int('train_image_size', None, 'Input side; must be the model\'s (300 or 512).')
    d_int('max_number_of_steps', None, 'Stop at this global step (default: never).')
    # Fine-tuning.
    d_str('pretrained_path', DEFAULT_PRETRAINED_PATH, 'Checkpoint (prefix or folder) to start from when '
          'train_dir has none; an empty folder or an empty value means from scratch.')
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
    """Values that are wrong whatever the dataset (the network's are checked by ModelConfig)."""
    _need(fv.data_format in (None,) + nets_factory.DATA_FORMATS, f'--data_format={fv.data_format}: use NHWC or NCHW')
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
    for name in ('log_every_n_steps', 'save_summaries_secs', 'save_interval_secs', 'save_every_n_steps'):
        _need(fv[name].value >= 0, f'--{name}={fv[name].value}: must be >= 0')
    _need(0 <= fv.max_bad_sample_fraction < 1, f'--max_bad_sample_fraction={fv.max_bad_sample_fraction}: must be in [0, 1)')
    _need(fv.max_number_of_steps is None or fv.max_number_of_steps > 0,
          f'--max_number_of_steps={fv.max_number_of_steps}: must be > 0')


def _same_path(path, other):
    return os.path.normpath(path) == os.path.normpath(other)


def _values(fv, config_class):
    """{field: flag value} for a dataclass whose field names are flag names."""
    return {field.name: fv[field.name].value for field in dataclasses.fields(config_class)}


def _cluster(fv):
    ps_hosts = tuple(distributed.parse_hosts(fv.ps_hosts, 'ps_hosts'))
    worker_hosts = tuple(distributed.parse_hosts(fv.worker_hosts, 'worker_hosts'))
    distributed.check_cluster_settings(ps_hosts, worker_hosts, fv.job_name, fv.task, fv.sync_replicas,
                                       fv.replicas_to_aggregate)
    return distributed.ClusterConfig(ps_hosts, worker_hosts, fv.job_name, fv.task, fv.sync_replicas,
                                     fv.replicas_to_aggregate, fv.cluster_wait_secs)


def _anchor_sizes(value):
    """--anchor_sizes -> (the sizes given, or (); whether to fit them to the training boxes)."""
    if not value:
        return (), False
    if value.strip().lower() == 'auto':
        return (), True
    try:
        return tuple(float(size) for size in value.split(',')), False
    except ValueError:
        raise UserError(f'--anchor_sizes={value}: give auto or comma-separated sizes in pixels') from None


def config_from_flags(fv):
    """The TrainConfig of the flags: every check that needs only their values (nothing is read from disk);
    UserError (one line naming the flag) at the first problem."""
    _check_ranges(fv)
    anchor_sizes, fit_anchor_sizes = _anchor_sizes(fv.anchor_sizes)
    model = ModelConfig(model_name=fv.model_name, depth_multiplier=fv.depth_multiplier, anchor_set=fv.anchor_set,
                        anchor_sizes=anchor_sizes, labels_offset=fv.labels_offset).validate_network()
    optimizer = schedules.OptimizerConfig(**_values(fv, schedules.OptimizerConfig))
    schedules.check_optimizer(optimizer)
    return train_plan.TrainConfig(
        model=model, fit_anchor_sizes=fit_anchor_sizes, loss=clones.LossConfig(fv.weight_decay, fv.negative_ratio, fv.loss_alpha, fv.label_smoothing),
        input=train_plan.InputConfig(
            fv.dataset_dir, DEMO_IMAGE_DIR if _same_path(fv.dataset_dir, DEMO_DATASET_DIR) else None,
            fv.dataset_name, fv.dataset_split_name, fv.num_classes, fv.labels_offset, fv.batch_size,
            fv.num_readers, fv.num_preprocessing_threads, fv.preprocessing_name, fv.train_image_size,
            fv.match_threshold, fv.ignore_difficult, fv.check_records, fv.max_bad_sample_fraction, fv.cache_images),
        schedule=schedules.schedule_from_values(_values(fv, schedules.ScheduleConfig)),
        num_epochs_per_decay_given=bool(fv['num_epochs_per_decay'].present), optimizer=optimizer,
        moving_average_decay=fv.moving_average_decay, trainable_scopes=fv.trainable_scopes,
        restore=checkpoints.RestoreConfig(
            pretrained=fv.pretrained_path, checkpoint_model_scope=fv.checkpoint_model_scope,
            exclude_scopes=tuple(checkpoints.split_scopes(fv.checkpoint_exclude_scopes)),
            ignore_missing_vars=fv.ignore_missing_vars),
        pretrained_optional=_same_path(fv.pretrained_path, DEFAULT_PRETRAINED_PATH),
        loop=train_tools.LoopConfig(fv.train_dir, fv.log_every_n_steps, fv.save_summaries_secs,
                                    fv.save_interval_secs, fv.save_every_n_steps, fv.max_number_of_steps),
        devices=train_plan.DeviceConfig(fv.num_clones, fv.clone_on_cpu, fv.gpu_memory_fraction, fv.data_format,
                                        fv.bfloat16, num_clones_given=fv['num_clones'].present),
        cluster=_cluster(fv), flag_lines=tuple(fv.flags_into_string().splitlines()))


def input_batch(plan):
    """One batch dict from the TFRecord pipeline: augmented images, their boxes, and the anchor targets."""
    data = plan.config.input
    target_encoder = plan.net.target_encoder(match_threshold=data.match_threshold,
                                            ignore_difficult=data.ignore_difficult)
    dataset = tfrecord_pipeline.make_dataset(plan.shards, plan.preprocess_fn, tfrecord_pipeline.PipelineConfig(
        data.batch_size, out_shape=plan.model.image_size, num_readers=data.num_readers,
        num_parallel_calls=data.num_preprocessing_threads, cache_decoded=plan.cache_decoded), encode_fn=target_encoder)
    return tf.data.make_one_shot_iterator(dataset).get_next()


def build_clones(plan, batch):
    """The network and its losses once per clone, each on its slice of the batch."""
    clone_fn = clones.ssd_clone_fn(plan.net, plan.model.data_format, plan.config.loss,
                                   weight_gradients_in_nchw=bool(plan.nchw_weight_gradient_layers))
    return clones.create_clones(clone_fn, clones.ssd_clone_inputs(batch, plan.config.devices.num_clones),
                                plan.deployment.device_fns)


def build_train_op(plan, clone_list, global_step):
    """(learning rate, TrainOp): the schedule, the optimizer, the trained variables, moving averages."""
    config = plan.config
    learning_rate = schedules.learning_rate_tensor(config.schedule, global_step, plan.decay_steps)
    train_op = train_tools.make_train_op(
        clone_list, schedules.make_optimizer(config.optimizer, learning_rate), global_step,
        checkpoints.variables_to_train(config.trainable_scopes), tf.model_variables(plan.net.scope),
        config.moving_average_decay, config.cluster.replicas_per_step(), len(config.cluster.worker_hosts))
    return learning_rate, train_op


def make_step_fn(plan, losses, learning_rate, step_after_update, summary_op, saver, stop, sample_counts):
    """The TrainStep: stop policy, log line, bad-sample check, the records' watch (their classes, and the record
    check that names a shard failing mid-run), and on the chief the checkpoint and summary cadence."""
    loop, data, is_chief = plan.config.loop, plan.config.input, plan.deployment.is_chief
    checkpoint_policy = step_policies.CheckpointPolicy(
        saver, loop.train_dir, train_tools.weights_finite_op(tf.trainable_variables()), loop.save_interval_secs,
        loop.save_every_n_steps) if is_chief else None
    summaries = step_policies.SummaryPolicy(summary_op, loop.save_summaries_secs) if is_chief else None
    samples = bad_samples.BadSampleMonitor(data.max_bad_sample_fraction, plan.num_samples, sample_counts)
    speed_log = step_policies.SpeedLog(loop.log_every_n_steps, data.batch_size, loop.max_number_of_steps)
    check = data.check_records and functools.partial(record_check.check_split, data.dataset_dir, data.split_name)
    watch = step_policies.DatasetWatch(data.dataset_dir, plan.info.class_names, check, images_cached=plan.cache_decoded)
    tensors = {'losses': losses, 'learning_rate': learning_rate, 'step': step_after_update}
    return train_tools.TrainStep(tensors, stop, speed_log, checkpoint_policy, summaries, samples, watch)


def train(plan, stop_request):
    """The graph for `plan`, then slim.learning.train; returns the TrainStep. A problem found while building the
    graph raises UserError before any file is written, so a refused run leaves train_dir as it was."""
    config, deployment = plan.config, plan.deployment
    with tf.Graph().as_default():
        # Devices and global step: variables on the shared device (or the parameter servers).
        with tf.device(deployment.device_fns[0]):
            global_step = tf.train.get_or_create_global_step()
        # TFRecord input: augmented batches with their anchor targets.
        with tf.device(deployment.input_device), tf.name_scope('inputs'):
            batch = input_batch(plan)
        # Clones with their losses.
        clone_list = build_clones(plan, batch)
        # Learning rate and optimizer: the train op.
        with tf.device(deployment.device_fns[0]):
            learning_rate, train_op = build_train_op(plan, clone_list, global_step)
            cluster_stop = distributed.ClusterStop(
                len(config.cluster.worker_hosts), train_op.sync_optimizer, config.cluster.replicas_per_step(),
                train_op.trained_variables) if config.cluster.in_cluster else None
        losses = train_tools.logged_losses(clone_list, train_op.total_loss)
        summary_op = train_tools.training_summaries(losses, learning_rate, [train_tools.input_image_summary(
            batch['image'], batch['gt_boxes'], ssd_vgg_preprocessing.VGG_MEAN_RGB)])
        # Restore chain: resume train_dir, else the pretrained checkpoint, else from scratch (chief only).
        init_fn = checkpoints.restore_chain(plan.restore, tf.model_variables(plan.net.scope), plan.net.scope,
                                            train_op.after_restore_op, logging.info) if deployment.is_chief else None
        saver = checkpoints.make_saver(saver_class=distributed.ChiefSaver, cluster_stop=cluster_stop,
                                       on_lost_cluster=stop_request.report_lost_cluster) \
            if cluster_stop else checkpoints.make_saver()
        step_fn = make_step_fn(plan, losses, learning_rate, train_op.step_after_update, summary_op, saver,
                               step_policies.StopPolicy(config.loop.max_number_of_steps, stop_request, cluster_stop),
                               bad_samples.BadSampleMonitor.batch_fetches(batch))
        # slim.learning.train: the session, initialisation or restore, the loop, the final checkpoint.
        run_training(plan, train_op, global_step, init_fn, saver, step_fn, cluster_stop, stop_request)
    return step_fn


def run_training(plan, train_op, global_step, init_fn, saver, step_fn, cluster_stop, stop_request):
    """The chief saves training_config.txt and model_config.json (the graph is complete), a non-chief waits
    for the chief's initialisation; then slim.learning.train."""
    config, deployment = plan.config, plan.deployment
    session_config = devices.session_config(
        config.devices.gpu_memory_fraction, deployment.cpu_devices, deployment.device_filters,
        config.cluster.wait_secs if config.cluster.in_cluster else 0, config.devices.bfloat16, plan.single_threaded_ops)
    # The chief alone writes the train_dir, and one training at a time.
    in_use = file_io.exclusive_use(config.loop.train_dir, '--train_dir') if deployment.is_chief else None
    with in_use or contextlib.nullcontext():
        if deployment.is_chief:
            if left := resume.remove_unfinished_saves(config.loop.train_dir):
                logging.info('Removed %d temporary file(s) of a save cut short: %s', len(left), ', '.join(left))
            startup_report.write_report(config.loop.train_dir, startup_report.training_report(plan),
                                        config.flag_lines, time.strftime(startup_report.STARTED_FORMAT))
            plan.model.save(config.loop.train_dir)
            if plan.restore.resume_note:   # slim's supervisor restores what the state file names
                resume.point_state_file_at(config.loop.train_dir, plan.restore.resume_from)
        else:
            distributed.wait_until_initialised(deployment.master, session_config, config.cluster.wait_secs,
                                               interrupted=lambda: stop_request.requested)
        local_init_op = tf.group(tf.local_variables_initializer(), tf.tables_initializer(),
                                 *([cluster_stop.init_op(deployment.is_chief)] if cluster_stop else []))
        slim.learning.train(
            train_op.train_tensor, logdir=config.loop.train_dir, train_step_fn=step_fn, train_step_kwargs={},
            master=deployment.master, is_chief=deployment.is_chief, global_step=global_step, init_fn=init_fn,
            local_init_op=local_init_op, summary_op=None, save_summaries_secs=config.loop.save_summaries_secs,
            summary_writer=step_policies.ResumingEventWriter(config.loop.train_dir) if deployment.is_chief else None,
            saver=saver, save_interval_secs=0, session_config=session_config, sync_optimizer=train_op.sync_optimizer)


def _setup_logging():
    logging.set_verbosity(logging.INFO)
    # Noise from tf-slim's supervisor closing its summary writer twice.
    warnings.filterwarnings('ignore', message='Attempting to use a closed FileWriter')


def join_cluster(plan):
    """A cluster worker starts its server, waits for the parameter servers and gets its devices; the server
    lives as long as the returned plan's process."""
    config = plan.config
    server, deployment = distributed.join_cluster(config.cluster, config.devices.num_clones, plan.use_gpus,
                                                  devices.session_config(config.devices.gpu_memory_fraction,
                                                  clones.cpu_device_count(config.devices.num_clones, plan.use_gpus)))
    return server, dataclasses.replace(plan, deployment=deployment)


def end_of_run_summary(plan, step_fn, stop_request):
    """train_plan.run_summary of this process's run. The chief's step is its final checkpoint's: with other
    workers stepping, the global step moves on between its last step and the save."""
    config = plan.config
    latest = checkpoints.latest_train_checkpoint(config.loop.train_dir) if plan.deployment.is_chief else None
    final_step = checkpoints.checkpoint_name_step(latest) if latest else step_fn.current_step
    stopped_by = (stop_request.signal_name if stop_request.requested
                  else train_plan.STOPPED_WITH_THE_CHIEF if step_fn.stop.stopped_with_the_chief else None)
    return train_plan.run_summary(config, step_fn.speed_log.totals(), final_step, latest, stopped_by,
                                  has_test_split='test' in plan.info.num_samples)


def main(fv):
    _setup_logging()
    stop_request = StopRequest()
    try:
        # Flags -> typed configuration (values checked; nothing read or written yet).
        config = config_from_flags(fv)
        if config.cluster.job_name == 'ps':  # a parameter server only holds the variables
            return distributed.serve_parameters(config.cluster)
        # The dataset: the default folder gets the demo data on first use.
        train_plan.prepare_dataset(config, logging.info)
        # The plan: dataset contents, network, devices and clones, where the weights come from.
        plan = train_plan.make_plan(config, devices.visible_gpu_count())
        # Every record read once: a damaged or short shard stops the run here, naming it.
        if config.input.check_records:
            logging.info('%s', record_check.check_split(config.input.dataset_dir, config.input.split_name))
        # The split read back: the anchors' fit to its boxes (--anchor_sizes=auto's sizes), its images' cache.
        plan = train_plan.fit_to_split(plan)
        # A cluster worker joins the cluster and gets its devices.
        server, plan = join_cluster(plan) if config.cluster.in_cluster else (None, plan)
        logging.info('Start-up report\n%s', startup_report.training_report(plan))
        # The graph and slim.learning.train, in a worker thread so that Ctrl-C is seen at once.
        stop_request.install()
        step_fn = stop_request.run(lambda: train(plan, stop_request))
    except distributed.LOST_CLUSTER_ERRORS as err:
        script_setup.print_error(distributed.lost_cluster_message(err))
        if stop_request.abandoned:  # the training thread is stuck closing its session on the dead task
            script_setup.exit_now(1)
        return 1
    del server
    logging.info('%s', end_of_run_summary(plan, step_fn, stop_request))
    return 0


if __name__ == '__main__':
    define_flags()
    script_setup.run_main(main, flags.FLAGS)
