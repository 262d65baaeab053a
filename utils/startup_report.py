"""The start-up report printed before the first training step (and saved as train_dir/training_config.txt).

Formatting: every function takes values and returns lines of text (the kernel line asks utils.devices, the
memory line utils.host, and a resumed run's schedule warning reads the flags of the run before it from
training_config.txt).
"""
import codecs
import dataclasses
import locale
import os
import time

from nets.ssd_params import num_anchors_per_cell
from utils import devices, host
from utils import learning_schedules as schedules
from utils.anchor_report import sizes_text
from utils.checkpoints import checkpoint_global_step
from utils.file_io import write_text_atomically
from utils.model_config import pretrained_mismatch_warning

REPORT_FILENAME = 'training_config.txt'
_RUN_HEADER = '# Run started '
STARTED_FORMAT = '%Y-%m-%d %H:%M:%S'   # of the header's local time
_MAX_FILES_LISTED = 4


def ssd_lines(net, data_format, anchor_source=None):
    """Network, input size, and per feature layer: shape, anchor sizes (pixels), ratios, anchors.
    anchor_source: where sizes not of net.anchor_set come from."""
    params = net.params
    anchors = f'anchor sizes {anchor_source}' if anchor_source else f'anchor set {net.anchor_set}'
    lines = [f'model {net.scope}: {params.num_classes} classes (background included), depth multiplier '
             f'{net.depth_multiplier:g}, {anchors}, input {params.img_shape[0]}x{params.img_shape[1]}, {data_format}']
    for layer, shape, sizes, ratios, per_cell in zip(params.feat_layers, params.feat_shapes, params.anchor_sizes,
                                                     params.anchor_ratios, num_anchors_per_cell(params)):
        count = shape[0] * shape[1] * per_cell
        lines.append(f'  {layer:8s} {shape[0]:>3d}x{shape[1]:<3d} sizes {sizes[0]:g},{sizes[1]:g} px  '
                     f'ratios {",".join(f"{r:.3g}" for r in ratios)}  {per_cell} per cell = {count} anchors')
    lines.append(f'  anchors in all: {len(net.anchors)}; prior scaling {tuple(params.prior_scaling)}')
    return lines


def dataset_lines(dataset_dir, split_name, shards, info, labels_offset=0):
    """Where the records are, how many samples each split has, the class names, and those trained when
    labels_offset drops the first ones."""
    names = [os.path.basename(path) for path in shards]
    shown = ', '.join(names[:_MAX_FILES_LISTED]) + (f', ... ({len(names)} files)' if len(names) > _MAX_FILES_LISTED
                                                    else '')
    samples = ', '.join(f'{split} {count}' for split, count in sorted(info.num_samples.items()))
    return [f'dataset {info.name} in {dataset_dir}: training on split {split_name!r} from {shown}',
            f'  samples per split: {samples}',
            f'  classes ({info.num_classes} with background): {", ".join(info.class_names[1:])}'
            + (f'; trained with --labels_offset={labels_offset}: {", ".join(info.class_names[1 + labels_offset:])} '
               f'(the others\' boxes are dropped)' if labels_offset else '')]


def device_lines(devices, batch_size, role=None):
    """Clones, their devices and the batch each one takes."""
    clones = len(devices)
    lines = [f'{clones} clone(s) on {", ".join(devices)}; batch {batch_size} = {clones} x {batch_size // clones} '
             f'per clone']
    if role:
        lines.append(f'  {role}')
    return lines


def weights_lines(is_chief, restore, train_dir):
    """Where the weights come from (the restore chain's choice, a checkpoints.RestoreConfig) and where the run
    writes."""
    if not is_chief:
        source = 'from the chief (worker 0), through the parameter servers'
    elif restore.resume_from:
        source = f'resume {restore.resume_from} (--train_dir holds a checkpoint; --pretrained_path is not used)'
        if restore.resume_note:
            source = f'warning: {source}, {restore.resume_note}; the state file will name it'
    elif restore.pretrained:
        source = f'pretrained {restore.pretrained}' + (f', checkpoint scope {restore.checkpoint_model_scope}'
                                                       if restore.checkpoint_model_scope else '')
    else:
        source = 'from scratch (random initialisation): no checkpoint in --train_dir or --pretrained_path'
    return [source, f'checkpoints and events in {train_dir}']


def training_report(plan):
    """The whole report for a utils.train_plan.TrainPlan (deployment set)."""
    config, deployment = plan.config, plan.deployment
    optimiser = (f'optimizer {schedules.describe_optimizer(config.optimizer)}, weight decay '
                 f'{config.loss.weight_decay:g}' + (f', moving average decay {config.moving_average_decay:g}'
                                                    if config.moving_average_decay else ''))
    schedule = schedules.describe_schedule(config.schedule, plan.decay_steps, plan.decay_source)
    from_scratch = deployment.is_chief and not plan.restore.resume_from and not plan.restore.pretrained
    resumed_step = checkpoint_global_step(plan.restore.resume_from) if plan.restore.resume_from else None
    earlier_run = _earlier_run_of_this_schedule(plan, resumed_step)
    anchor_source = None if not plan.model.anchor_sizes else (
        f'fitted to the training boxes (--anchor_sizes=auto: --anchor_sizes={sizes_text(plan.model.anchor_sizes)})'
        if config.fit_anchor_sizes else 'given (--anchor_sizes)')
    return format_report([
        ('SSD network', ssd_lines(plan.net, plan.model.data_format, anchor_source)),
        ('Dataset', dataset_lines(config.input.dataset_dir, config.input.split_name, plan.shards, plan.info,
                                  config.input.labels_offset)
         + list(plan.anchor_lines) + list(filter(None, [plan.cache_line]))),
        ('Devices', device_lines(deployment.clone_devices, config.input.batch_size, deployment.description)
         + [devices.kernel_description(plan.model.data_format, config.devices.bfloat16,
                                       plan.nchw_weight_gradient_layers, plan.single_threaded_ops,
                                       plan.paired_column_layers)]
         + list(filter(None, [host.malloc_description(os.environ)]))),
        ('Optimisation', [f'schedule {schedule}', optimiser,
                          f'trainable scopes: {config.trainable_scopes or "all"}; max steps '
                          f'{config.loop.max_number_of_steps or "unlimited"}']
         + list(filter(None, [schedules.early_decay_warning(config.schedule, plan.decay_steps, plan.decay_source,
                                                            config.loop.max_number_of_steps),
                              _horizon_warning(plan, resumed_step, earlier_run),
                              _period_warning(plan, resumed_step, earlier_run),
                              _nothing_to_train(plan, resumed_step)]))),
        ('Weights', weights_lines(deployment.is_chief, plan.restore, config.loop.train_dir)
         + list(filter(None, [from_scratch and schedules.scratch_warmup_warning(config.optimizer,
                                                                                 config.schedule),
                              pretrained_mismatch_warning(plan.restore.pretrained, plan.model,
                                                          plan.restore.exclude_scopes)]))),
    ])


def format_report(sections):
    """[(title, lines)] -> one text block with a header per section."""
    out = []
    for title, lines in sections:
        out.append(f'# {title}')
        out.extend(lines)
    return '\n'.join(out) + '\n'


def write_report(train_dir, text, flag_lines, started):
    """Add this run's report plus every flag's value to train_dir/training_config.txt, under '# Run started
    <started>': a resumed run's block goes below the earlier runs', which stay (their flags may differ)."""
    path = os.path.join(train_dir, REPORT_FILENAME)
    earlier = _read_report(path) + '\n' if os.path.isfile(path) else ''
    # The flags as given: a value the run changed (towers for --num_clones, a cosine over --max_number_of_steps
    # instead of --num_epochs_per_decay) shows in the report above; the header says so.
    write_text_atomically(path, earlier + f'{_RUN_HEADER}{started}\n' + text
                          + '# Flags (as given or defaulted; the report above says what the run made of them)\n'
                          + ''.join(line + '\n' for line in flag_lines))


def _read_report(path):
    """training_config.txt's text: UTF-8, or the locale's encoding for one written before it was UTF-8 (a path
    or class name with 'é' under Windows' cp1252), or Latin-1 (which keeps every byte, cp1252's 'é' among them)
    for such a file read under a UTF-8 locale."""
    with open(path, 'rb') as report:
        data = report.read()
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        encoding = locale.getpreferredencoding(False)
        if codecs.lookup(encoding).name == 'utf-8':
            encoding = 'latin-1'
        return data.decode(encoding, errors='replace')


def _earlier_run_of_this_schedule(plan, step):
    """The lines of the run that saved the checkpoint resumed at `step` (the newest block of training_config.txt
    started before the checkpoint was written), when that run had this run's schedule flags (else a
    difference is the user's change); None when not resumed, at a step that cannot be told, or without one."""
    if step is None:
        return None
    saved_at = os.path.getmtime(plan.restore.resume_from + '.index')
    lines = _earlier_run_lines(plan.config.loop.train_dir, saved_at)
    earlier, now = _flag_values(lines), _flag_values(plan.config.flag_lines)
    if any(earlier.get(field.name) != now.get(field.name) for field in dataclasses.fields(schedules.ScheduleConfig)):
        return None
    return lines


def _horizon_warning(plan, step, earlier_run):
    """schedules.horizon_change_warning for a run resumed at `step`, against earlier_run
    (_earlier_run_of_this_schedule's lines, or None)."""
    steps = _flag_values(earlier_run or []).get('max_number_of_steps', '')
    if not steps.isdigit():
        return None
    return schedules.horizon_change_warning(plan.config.schedule, plan.decay_steps, plan.decay_source, step,
                                            int(steps))


def _period_warning(plan, step, earlier_run):
    """schedules.period_change_warning for a run resumed at `step`, against the decay steps in earlier_run's
    schedule line (_earlier_run_of_this_schedule's lines, or None)."""
    described = [line for line in earlier_run or [] if line.startswith('schedule ')]
    if not described or schedules.RUN_LENGTH_SOURCE in described[-1]:   # that run fell over its own length
        return None
    return schedules.period_change_warning(plan.config.schedule, plan.decay_steps, plan.decay_source, step,
                                           schedules.described_decay_steps(described[-1]))


def _nothing_to_train(plan, step):
    """A line when the checkpoint resumed (at `step`, None when not resumed) has reached --max_number_of_steps:
    rerunning a finished run's command trains no step, where a larger limit was meant ('train more')."""
    limit = plan.config.loop.max_number_of_steps
    if step is None or not limit or step < limit:
        return None
    return (f'warning: the checkpoint resumed is at step {step}, --max_number_of_steps={limit}: this run trains '
            f'no step; a larger --max_number_of_steps trains on')


def _flag_values(flag_lines):
    """{name: value as written} of '--name=value' lines."""
    return dict(line[2:].split('=', 1) for line in flag_lines if line.startswith('--') and '=' in line)


def _earlier_run_lines(train_dir, saved_at):
    """The lines (report and flags) of the newest run in train_dir's training_config.txt (write_report's
    blocks) that started by `saved_at` (a time.time()): the run that saved a checkpoint written then, not a
    later one that ended before its first save; a block whose start cannot be read counts as such a run.
    [] without one."""
    path = os.path.join(train_dir, REPORT_FILENAME)
    if not os.path.isfile(path):
        return []
    blocks = _read_report(path).split(_RUN_HEADER)[1:]
    for block in reversed(blocks):
        header, _, lines = block.partition('\n')
        try:
            started = time.mktime(time.strptime(header.strip(), STARTED_FORMAT))
        except ValueError:
            started = None
        if started is None or started <= saved_at:
            return lines.splitlines()
    return []
