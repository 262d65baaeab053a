"""Training's typed configuration (TrainConfig: the flags' values, grouped by concern) and its plan (TrainPlan:
what the configuration resolves to once the dataset, the devices and the checkpoint folders are read).

train_ssd_network.py fills a TrainConfig from its flags; prepare_dataset and make_plan run before any graph is
built, so every problem they find stops the run with one line before anything is written.
"""
import dataclasses
import os
import shlex
import time
from typing import Any, Optional

from datasets import dataset_info as ds_info
from datasets import record_check, split_boxes
from datasets.label_offset import offset_then_preprocess
from datasets.voc_reader import image_names
from nets import nets_factory
from preprocessing import preprocessing_factory
from utils import anchor_report, checkpoints, clones, learning_schedules, model_config, resume
from utils import devices as device_info
from utils import host
from utils.distributed import ClusterConfig
from utils.errors import UserError
from utils.file_io import check_writable_folder
from utils.train_tools import LoopConfig


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """The records to train on and how batches are made from them."""
    dataset_dir: str
    demo_image_dir: Optional[str] = None   # dataset_dir is the demo's: make the demo data here first
    dataset_name: Optional[str] = None     # built-in class list for a folder without dataset_info.json
    split_name: str = 'train'
    num_classes: Optional[int] = None      # must match the dataset when given
    labels_offset: int = 0
    batch_size: int = 32
    num_readers: int = 4
    num_preprocessing_threads: int = 4
    preprocessing_name: Optional[str] = None
    train_image_size: Optional[int] = None
    match_threshold: float = 0.5           # anchor targets (box_coder)
    ignore_difficult: bool = True
    check_records: bool = True             # read every shard once before training (datasets/record_check)
    max_bad_sample_fraction: float = 0.01  # undecodable samples allowed (datasets/bad_samples)
    cache_images: str = 'auto'             # CACHE_IMAGES_MODES: decoded images kept after the first epoch


@dataclasses.dataclass(frozen=True)
class DeviceConfig:
    num_clones: int = 1
    clone_on_cpu: bool = False
    gpu_memory_fraction: float = 0.8
    data_format: Optional[str] = None      # None: nets_factory.default_data_format
    bfloat16: bool = False                 # oneDNN's bfloat16 rewrite (CPUs with AVX512_BF16 / AMX only)
    num_clones_given: bool = False         # --num_clones was set (else a narrow network may get cpu_towers)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every training setting, from the flags (nothing resolved from disk yet)."""
    model: Any                    # model_config.ModelConfig of the flags (classes and layout set by make_plan)
    fit_anchor_sizes: bool              # --anchor_sizes=auto: fit model.anchor_sizes to the training boxes
    input: InputConfig
    loss: clones.LossConfig
    schedule: learning_schedules.ScheduleConfig
    num_epochs_per_decay_given: bool    # set by the user (else cosine/polynomial fall over max_number_of_steps)
    optimizer: learning_schedules.OptimizerConfig
    moving_average_decay: Optional[float]
    trainable_scopes: Optional[str]
    restore: checkpoints.RestoreConfig  # pretrained: --pretrained_path as given
    pretrained_optional: bool           # --pretrained_path is the default folder: it may be absent
    loop: LoopConfig
    devices: DeviceConfig
    cluster: ClusterConfig
    flag_lines: tuple = ()              # every flag's value, for training_config.txt


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """The resolved run. Frozen: a cluster worker's deployment, known only once it has joined the cluster,
    is set with dataclasses.replace."""
    config: TrainConfig
    model: Any                  # model_config.ModelConfig written to train_dir (num_classes after labels_offset)
    net: Any                    # the network of `model`
    info: Any                   # datasets.dataset_info.DatasetInfo of the dataset folder
    shards: list                # the split's TFRecord paths
    num_samples: int            # records in the split (samples per epoch)
    preprocess_fn: Any          # labels_offset, then the training augmentation
    decay_steps: int            # global steps of one decay period (learning_schedules.decay_length)
    decay_source: str           # where decay_steps comes from, for the start-up report
    restore: Any                # checkpoints.RestoreConfig with resume_from / pretrained resolved
    use_gpus: bool              # clones on GPUs (else on logical CPU devices)
    nchw_weight_gradient_layers: tuple  # layers whose weight gradients training computes in NCHW (conv_gradients)
    paired_column_layers: tuple  # layers the network computes on column pairs (nets/column_pairs.py)
    single_threaded_ops: bool   # one thread per op: devices.cpu_towers' clones (config.devices.num_clones)
    deployment: Any = None      # clones.Deployment; None for a cluster worker until it joins
    anchor_lines: tuple = ()    # the anchor fit's report lines (fit_to_split)
    cache_decoded: bool = False  # the decoded training images stay in memory after the first epoch (fit_to_split)
    cache_line: str = ''        # the report's line saying so, or why not (fit_to_split)


def _need(condition, message):
    if not condition:
        raise UserError(message)


def prepare_dataset(config, log_fn, poll_secs=1.0):
    """The demo's dataset folder gets the demo data (generated and converted) on first use: by the chief only;
    another cluster worker waits up to --cluster_wait_secs for the chief's dataset_info.json. Any other
    dataset_dir must exist: it is the user's, never written here."""
    data, cluster = config.input, config.cluster
    if data.demo_image_dir and cluster.is_chief:
        from datasets import demo_dataset  # needs PIL, only here
        demo_dataset.ensure_demo_dataset(data.demo_image_dir, data.dataset_dir, log_fn)
    elif data.demo_image_dir:
        info_path = os.path.join(data.dataset_dir, ds_info.INFO_FILENAME)
        deadline = time.time() + cluster.wait_secs
        while not os.path.isfile(info_path):
            _need(time.time() < deadline, f'--dataset_dir={data.dataset_dir}: the chief (worker 0) has not made the '
                                          f'demo data after {cluster.wait_secs:g} s; start worker 0 first')
            time.sleep(poll_secs)
    _need(os.path.isdir(data.dataset_dir), f'--dataset_dir={data.dataset_dir}: no such directory; convert your '
                                           f'labelled images into it first (README section 2), or try the demo: '
                                           f'python train_ssd_network.py --flagfile=configs/demo_cpu.flags')


_DRAW_GLOB_MAX = 20   # a folder with more images gets a few named: the command is a quick look, not a batch job
_DRAW_SAMPLE = 3
_NO_IMAGES = 'path/to/your/photos/*.jpg'


def _images_beside(dataset_dir):
    """The VOC folder's JPEGImages/ when the records sit in that folder (README: IMAGE/tfrecords beside
    IMAGE/JPEGImages), else README's IMAGE/JPEGImages."""
    beside = os.path.join(os.path.dirname(os.path.normpath(dataset_dir)), 'JPEGImages')
    return beside if os.path.isdir(beside) else os.path.join('IMAGE', 'JPEGImages')


def _images_to_draw(dataset_dir):
    """detect.py's --images for the end-of-run command: the images beside the records as globs of the extensions
    they have when there are at most _DRAW_GLOB_MAX, else the first _DRAW_SAMPLE by name; a placeholder where that
    folder has none."""
    folder = _images_beside(dataset_dir)
    names = image_names(folder)
    if not names:
        return shlex.quote(_NO_IMAGES)
    if len(names) > _DRAW_GLOB_MAX:
        return shlex.quote(','.join(os.path.join(folder, name) for name in names[:_DRAW_SAMPLE]))
    extensions = sorted({os.path.splitext(name)[1] for name in names})
    return shlex.quote(','.join(os.path.join(folder, '*' + extension) for extension in extensions))


def next_commands(config, has_test_split=True):
    """(evaluate, draw detections): the commands that use this run's checkpoints, printed at its end.
    has_test_split: the dataset has the 'test' split evaluation reads (else the command says how to make one)."""
    train_dir, data = config.loop.train_dir, config.input
    # 000300 is the first image of the demo's test split (300 train images come first).
    images = (os.path.join(data.demo_image_dir, 'JPEGImages', '000300.jpg') if data.demo_image_dir
              else _images_to_draw(data.dataset_dir))
    evaluate = f'python eval_ssd_network.py --dataset_dir={data.dataset_dir} --checkpoint_path={train_dir}'
    if data.dataset_name and not os.path.isfile(os.path.join(data.dataset_dir, ds_info.INFO_FILENAME)):
        evaluate += f' --dataset_name={data.dataset_name}'   # records without dataset_info.json (SSD-Tensorflow's)
    if not has_test_split:
        evaluate += (f" once {data.dataset_dir} has a 'test' split (tf_convert_data.py --validation_fraction=0.2 "
                     f"holds a fifth of the images out)")
    return evaluate, f'python detect.py --checkpoint_path={train_dir} --images={images} --output_dir=out'


STOPPED_WITH_THE_CHIEF = 'the chief'   # run_summary's stopped_by for a worker that the chief's stop ended


def run_summary(config, totals, final_step, checkpoint=None, stopped_by=None, has_test_split=True):
    """The paragraph that ends a run: how it ended and its checkpoint (None on a non-chief worker, which then
    gets no commands), this process's totals (step_policies.SpeedLog.totals), and the next_commands.
    stopped_by: the signal's name, STOPPED_WITH_THE_CHIEF, or None (the step limit)."""
    where = f', checkpoint {checkpoint}' if checkpoint else ''
    if stopped_by == STOPPED_WITH_THE_CHIEF:
        head = f'Stopped with the chief (worker 0) at global step {final_step}.'
    elif stopped_by:
        head = f'Stopped by {stopped_by} at step {final_step}{where}; run the same command to resume.'
    else:
        head = f'Training done at step {final_step}{where}.'
    if not checkpoint:
        return f'{head} {totals}'
    evaluate, draw = next_commands(config, has_test_split)
    return f'{head} {totals}\nEvaluate it: {evaluate}\nDraw its detections: {draw}'


def _counted_split(info, dataset_dir, split_name, shards):
    """A record folder without dataset_info.json (SSD-Tensorflow's) gets the built-in VOC split sizes, those of
    the whole VOC split; its shards may hold fewer (a subset, or VOC2007's train list alone). The training
    split's count, which the schedule's epochs and the report use, is the records its shards hold."""
    hint = record_check.rebuild_hint(dataset_dir, info.name)
    counted = sum(record_check.count_records(path, hint) for path in shards)
    return dataclasses.replace(info, num_samples={**info.num_samples, split_name: counted})


def _model(config, info, use_gpus):
    """The ModelConfig training writes: the flags' network on the dataset's classes after labels_offset."""
    data = config.input
    _need(data.labels_offset < info.num_classes - 1,
          f'--labels_offset={data.labels_offset}: must leave at least one class of {info.num_classes - 1}')
    num_classes = info.num_classes - data.labels_offset
    _need(data.num_classes is None or data.num_classes == num_classes,
          f'--num_classes={data.num_classes}: the dataset in {data.dataset_dir} has {num_classes} (background '
          f'included)')
    data_format = nets_factory.resolve_data_format(config.devices.data_format, use_gpus)
    model = dataclasses.replace(config.model, num_classes=num_classes, data_format=data_format,
                                class_names=('none',) + tuple(info.class_names[1 + data.labels_offset:]))
    size = model.build_network().default_image_size
    _need(data.train_image_size in (None, size), f'--train_image_size={data.train_image_size}: {model.model_name} '
                                                 f'takes {size}x{size} inputs (its anchors are laid out for that size)')
    return dataclasses.replace(model, image_size=(size, size)).validate()


def _restore(config):
    """RestoreConfig with the chain resolved. Only the chief loads weights (the others receive them through
    the parameter servers); a checkpoint to resume wins, and --pretrained_path is then not looked at."""
    if not config.cluster.is_chief:
        return dataclasses.replace(config.restore, pretrained=None)
    resume_from, resume_note = resume.checkpoint_to_resume(config.loop.train_dir)
    pretrained = None if resume_from or not config.restore.pretrained else checkpoints.resolve_checkpoint(
        config.restore.pretrained, '--pretrained_path', missing_ok=config.pretrained_optional)
    return dataclasses.replace(config.restore, resume_from=resume_from, resume_note=resume_note,
                               pretrained=pretrained)


def _resumed_anchor_sizes(model, train_dir):
    """--anchor_sizes=auto when resuming: the sizes fitted when the run began, saved in model_config.json."""
    saved = model_config.ModelConfig.load(train_dir)
    if saved is None:
        return model
    _need(saved.anchor_sizes, f'--anchor_sizes=auto: the checkpoints in --train_dir={train_dir} were trained with '
                              f'the {saved.anchor_set} anchor sizes; resume without --anchor_sizes, or start '
                              f'a new --train_dir')
    return dataclasses.replace(model, anchor_sizes=saved.anchor_sizes)


CACHE_IMAGES_MODES = ('auto', 'always', 'never')
CACHE_MEMORY_SHARE = 0.25   # --cache_images=auto: the most of the memory available at start-up the cache may take


def _size_text(size):
    return f'{size / 1e9:.2f} GB' if size >= 1e9 else f'{size / 1e6:.0f} MB'


def image_cache(mode, decoded_bytes, available_bytes):
    """(whether training keeps the split's decoded images in memory after the first epoch, the report's line) for
    --cache_images=mode; decoded_bytes: the split's images decoded (None: unknown), available_bytes: the memory
    available now (None: unknown). Reading and decoding are about 30% of the input pipeline's CPU time
    (bench/RESULTS.md, issue 9)."""
    size = f'{_size_text(decoded_bytes)} decoded' if decoded_bytes is not None else 'size unknown'
    if mode == 'never':
        return False, f'decoded images: read and decoded every epoch (--cache_images=never; {size})'
    if mode == 'always':
        return True, f'decoded images: kept in memory after the first epoch (--cache_images=always; {size})'
    if decoded_bytes is None or available_bytes is None:
        unknown = ('the records do not give their images\' sizes' if decoded_bytes is None
                   else 'the memory available is unknown')
        return False, (f'decoded images: read and decoded every epoch ({unknown}; --cache_images=always keeps them '
                       'in memory)')
    budget = CACHE_MEMORY_SHARE * available_bytes
    if decoded_bytes <= budget:
        return True, (f'decoded images: kept in memory after the first epoch ({size}, within a quarter of the '
                      f'{_size_text(available_bytes)} available; --cache_images=never to read them every epoch)')
    return False, (f'decoded images: read and decoded every epoch ({size}, more than a quarter of the '
                   f'{_size_text(available_bytes)} available; --cache_images=always keeps them in memory)')


def fit_to_split(plan, available_bytes=None):
    """The plan fitted to its training split, read back from its records: the anchor fit (anchor_lines) on its
    boxes, with --anchor_sizes=auto and no sizes yet (a new run) the model's anchor sizes fitted to them first;
    and whether its decoded images stay in memory (image_cache; available_bytes: the memory available, default
    read from the host)."""
    config, model = plan.config, plan.model
    boxes, records, decoded_bytes = split_boxes.split_boxes(plan.shards, plan.num_samples,
                                                            labels_offset=config.input.labels_offset)
    cache_decoded, cache_line = image_cache(config.input.cache_images, decoded_bytes,
                                            available_bytes or host.available_memory_bytes())
    threshold = config.input.match_threshold
    if config.fit_anchor_sizes and not model.anchor_sizes:
        model = dataclasses.replace(model, anchor_sizes=anchor_report.fitted_sizes(boxes, plan.net.params, threshold))
    net = model.build_network()
    builtin = dataclasses.replace(model, anchor_sizes=()).build_network().params if config.fit_anchor_sizes else None
    lines = anchor_report.fit_lines(boxes, model.model_name, net.params, threshold, builtin,
                                    f'split {config.input.split_name!r} ({records} records)')
    return dataclasses.replace(plan, model=model, net=net, anchor_lines=tuple(lines), cache_decoded=cache_decoded,
                               cache_line=cache_line)


def make_plan(config, num_gpus):
    """The TrainPlan of `config`: reads the dataset's dataset_info.json and shard list, and train_dir's
    checkpoint state and model_config.json; UserError (one line naming the flag) at the first problem."""
    data, devices = config.input, config.devices
    if config.cluster.is_chief:   # the one that writes checkpoints, summaries and the reports
        check_writable_folder(config.loop.train_dir, '--train_dir')
    clones.check_clone_settings(data.batch_size, devices.num_clones, num_gpus, devices.clone_on_cpu)
    use_gpus = num_gpus > 0 and not devices.clone_on_cpu
    _need(not devices.bfloat16 or (not use_gpus and device_info.cpu_has_bfloat16()),
          '--bfloat16: ' + ('is for CPU clones (oneDNN\'s rewrite); GPUs are in use' if use_gpus else
                            'this CPU has no AVX512_BF16 or AMX-BF16 (see the flags in /proc/cpuinfo), so oneDNN '
                            'would emulate bfloat16, slower than float32'))
    info = ds_info.resolve_dataset_info(data.dataset_dir, data.dataset_name)
    shards = ds_info.list_shards(data.dataset_dir, data.split_name)
    if not os.path.isfile(os.path.join(data.dataset_dir, ds_info.INFO_FILENAME)):
        info = _counted_split(info, data.dataset_dir, data.split_name, shards)
    num_samples = info.num_samples.get(data.split_name, 0)
    _need(num_samples > 0, f'{data.dataset_dir}: {ds_info.INFO_FILENAME} counts no samples for split '
                           f'{data.split_name!r}')
    model = _model(config, info, use_gpus)
    restore = _restore(config)
    if restore.resume_from:
        if config.fit_anchor_sizes:
            model = _resumed_anchor_sizes(model, config.loop.train_dir)
        model_config.check_resumable(config.loop.train_dir, model)
    preprocess_fn = preprocessing_factory.get_preprocessing(data.preprocessing_name or model.model_name, True)
    # Images behind one global step: one worker's batch, or replicas_to_aggregate batches in sync mode.
    images_per_step = data.batch_size * max(config.cluster.replicas_per_step(), 1)
    decay_steps, decay_source = learning_schedules.decay_length(
        config.schedule, num_samples, images_per_step, config.loop.max_number_of_steps,
        config.num_epochs_per_decay_given)
    net = model.build_network()
    nchw_weight_gradient_layers, paired_column_layers, towers = (), (), 1
    if device_info.onednn_on_avx2(model.data_format, use_gpus):
        wide_layers, paired_column_layers = clones.special_layers(net, model.data_format, model.image_size)
        if device_info.avx2_without_avx512(model.data_format, use_gpus):
            nchw_weight_gradient_layers = wide_layers
        if not (wide_layers or devices.num_clones_given or config.cluster.in_cluster):
            towers = device_info.cpu_towers(data.batch_size, os.cpu_count())
    if towers > 1:
        devices = dataclasses.replace(devices, num_clones=towers, clone_on_cpu=True)
        config = dataclasses.replace(config, devices=devices)
    return TrainPlan(
        config=config, model=model, net=net, info=info, shards=shards, num_samples=num_samples,
        preprocess_fn=offset_then_preprocess(preprocess_fn, data.labels_offset),
        decay_steps=decay_steps, decay_source=decay_source,
        restore=restore, use_gpus=use_gpus,
        nchw_weight_gradient_layers=nchw_weight_gradient_layers, paired_column_layers=paired_column_layers,
        single_threaded_ops=towers > 1,
        deployment=None if config.cluster.in_cluster else clones.local_deployment(devices.num_clones, use_gpus))
