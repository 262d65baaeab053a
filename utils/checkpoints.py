"""Everything about checkpoints: finding them, reading their names and shapes, mapping graph variables onto
those names, checking that they fit, the training restore chain and the inference restore.

A checkpoint is compared with the graph before any session starts, so a stale train_dir or a checkpoint of
another model stops with the variable names and the remedy instead of TensorFlow's opaque restore error.
Variable names are SSD-Tensorflow's and TF-Slim's (tests/data/published_checkpoints.md lists them).
"""
import collections
import dataclasses
import glob
import os
import re

import tensorflow.compat.v1 as tf

from utils.errors import UserError

CHECKPOINT_BASENAME = 'model.ckpt'   # slim.learning.train's final save uses the same prefix
MAX_LISTED = 3   # names shown in a message before '(and N more)'
MOVING_AVERAGE_SUFFIX = '/ExponentialMovingAverage'   # a weight's average with --moving_average_decay

# One variable whose shape differs between the model and a checkpoint; checkpoint_shape None = absent.
CheckpointMismatch = collections.namedtuple('CheckpointMismatch',
                                            ['checkpoint_name', 'model_shape', 'checkpoint_shape'])
RestorePlan = collections.namedtuple('RestorePlan', [
    'var_map',     # {name in the checkpoint: graph variable} to restore
    'excluded',    # graph variable names left out by the exclude scopes
    'missing',     # graph names (after the scope mapping) absent from the checkpoint, ignored
])


@dataclasses.dataclass(frozen=True)
class RestoreConfig:
    """Where training's weights come from (resolved before the graph) and how a pretrained one maps."""
    resume_from: str = None             # train_dir checkpoint to resume, else None
    resume_note: str = None             # why it is not the one train_dir's state file names, when it is not
    pretrained: str = None              # checkpoint to fine-tune from when there is nothing to resume
    checkpoint_model_scope: str = None  # the model's scope inside `pretrained` (e.g. vgg_16)
    exclude_scopes: tuple = ()          # scopes not restored from `pretrained`
    ignore_missing_vars: bool = False   # skip variables `pretrained` lacks


def _listing(items, limit=MAX_LISTED, separator=', '):
    items = list(items)
    shown = separator.join(items[:limit])
    return shown + (f' (and {len(items) - limit} more)' if len(items) > limit else '')


def split_scopes(text):
    """'a, b/c,' -> ['a', 'b/c']: the comma-separated scope flags."""
    return [scope.strip().rstrip('/') for scope in (text or '').split(',') if scope.strip()]


def in_scopes(name, scopes):
    """True when variable `name` is one of the scopes or lies under one ('a/b' is under 'a', not 'a/bc')."""
    return any(name == scope or name.startswith(scope + '/') for scope in scopes)


# ---- Finding and reading checkpoints -------------------------------------------------------------------

def read_variable_shapes(prefix, flag=None):
    """{name: shape} of the checkpoint at `prefix`: the one place a checkpoint's listing is read. UserError
    (naming `flag` when given) for anything TensorFlow cannot read."""
    try:
        return dict(tf.train.list_variables(prefix))
    except (tf.errors.OpError, ValueError) as err:
        where = f'{flag}={prefix}' if flag else prefix
        archive = prefix.lower().endswith(('.zip', '.tar', '.tar.gz', '.tgz'))
        unpack = '; it is an archive: unpack it and name the checkpoint inside' if archive else ''
        raise UserError(f'{where}: not a readable TensorFlow checkpoint ({str(err).splitlines()[0]}){unpack}') from None


def _checkpoint_candidates(directory):
    """Checkpoint prefixes in a directory without a 'checkpoint' state file: V2 '<p>.index' and V1 '*.ckpt'."""
    prefixes = {path[:-len('.index')] for path in glob.glob(os.path.join(glob.escape(directory), '*.index'))}
    prefixes |= {path for path in glob.glob(os.path.join(glob.escape(directory), '*.ckpt')) if os.path.isfile(path)}
    return sorted(prefixes)


def _is_checkpoint(prefix):
    """A V2 checkpoint ('<prefix>.index') or a V1 one (the file itself, or its shards)."""
    return (os.path.isfile(prefix + '.index') or os.path.isfile(prefix)
            or bool(glob.glob(glob.escape(prefix) + '-?????-of-?????')))


def latest_train_checkpoint(train_dir):
    """The prefix train_dir's 'checkpoint' state file points to, or None (no such file, or a checkpoint gone)."""
    prefix = state_file_checkpoint(train_dir) if os.path.isdir(train_dir) else None
    return prefix if prefix and _is_checkpoint(prefix) else None


def state_file_checkpoint(directory):
    """The prefix directory's 'checkpoint' state file names (whether it exists or not), or None when it names none
    or cannot be parsed. tf.train.latest_checkpoint would log an error of its own for a missing one."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError):   # a damaged state file (a text protobuf that does not parse)
        return None
    # get_checkpoint_state puts a relative name in directory, as the Saver does (./ckpt/demo/model.ckpt-4500).
    return state.model_checkpoint_path if state and state.model_checkpoint_path else None


def unreadable_reason(prefix):
    """'' when every tensor of the checkpoint reads back (index, data shards and their checksums), else why not."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as err:   # IndexError: a data file cut short
        return str(err).splitlines()[0] or type(err).__name__
    return ''


def resolve_checkpoint(path, flag='--pretrained_path', missing_ok=False):
    """A readable checkpoint prefix from a prefix, a file of one ('x.ckpt.index' -> 'x.ckpt'), or a directory
    holding one; None for a directory with no checkpoint or, with missing_ok, a path that does not exist."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, 'checkpoint')):
            prefix = state_file_checkpoint(path)
            if prefix is None or not _is_checkpoint(prefix):
                raise UserError(f'{flag}={path}: its checkpoint state file points to a missing checkpoint')
        else:
            candidates = _checkpoint_candidates(path)
            if len(candidates) > 1:
                raise UserError(f'{flag}={path}: holds several checkpoints ({_listing(candidates)}); '
                                f'pass the one to use')
            prefix = candidates[0] if candidates else None
    else:
        prefix = re.sub(r'\.(index|meta|data-\d+-of-\d+)$', '', path)
        if not _is_checkpoint(prefix):
            if missing_ok:
                return None
            raise UserError(f'{flag}={path}: no such checkpoint or directory')
    if prefix is not None:
        read_variable_shapes(prefix, flag)
    return prefix


def require_checkpoint(path, flag='--checkpoint_path'):
    """resolve_checkpoint for the inference tools: a directory without a checkpoint is an error too."""
    prefix = resolve_checkpoint(path, flag)
    if prefix is None:
        raise UserError(f'{flag}={path}: no checkpoint in this directory')
    return prefix


def checkpoint_global_step(prefix):
    """The checkpoint's global_step variable, else the '-<step>' suffix of its name, else None."""
    try:
        return int(tf.train.load_variable(prefix, 'global_step'))
    except (tf.errors.OpError, ValueError):
        return checkpoint_name_step(prefix)


def checkpoint_name_step(prefix):
    """The '-<step>' suffix of a checkpoint's name (model.ckpt-4812 -> 4812), else None."""
    found = re.search(r'-(\d+)$', prefix)
    return int(found.group(1)) if found else None


# ---- Names and compatibility ----------------------------------------------------------------------------

def checkpoint_variable_map(variables, model_scope, checkpoint_model_scope=None):
    """{checkpoint name: variable}, renaming a leading `model_scope` to `checkpoint_model_scope`.

    E.g. model_scope 'ssd_300_vgg', checkpoint_model_scope 'vgg_16':
    ssd_300_vgg/conv1/conv1_1/weights <- vgg_16/conv1/conv1_1/weights. None keeps the names.
    """
    mapping = {}
    for variable in variables:
        name = variable.op.name
        if checkpoint_model_scope is not None and in_scopes(name, [model_scope]):
            name = checkpoint_model_scope + name[len(model_scope):]
        mapping[name] = variable
    return mapping


def find_mismatches(prefix, variables_map):
    """CheckpointMismatch list, sorted by name, for the entries of `variables_map` ({checkpoint name:
    variable}) absent from the checkpoint or stored with another shape. Empty = restorable."""
    checkpoint_shapes = read_variable_shapes(prefix)
    mismatches = []
    for name in sorted(variables_map):
        model_shape = variables_map[name].shape.as_list()
        checkpoint_shape = checkpoint_shapes.get(name)
        if checkpoint_shape is None or list(checkpoint_shape) != model_shape:
            mismatches.append(CheckpointMismatch(name, model_shape, checkpoint_shape))
    return mismatches


def format_mismatches(mismatches, limit=MAX_LISTED):
    """One line: 'name [84] in the checkpoint, [20] in the model' or 'name absent from the checkpoint', shape
    differences first (they tell the most), '; '-separated, the first `limit` then '(and N more)'."""
    ordered = sorted(mismatches, key=lambda m: m.checkpoint_shape is None)  # stable: names stay sorted
    return _listing([f'{m.checkpoint_name} {m.checkpoint_shape} in the checkpoint, {m.model_shape} in the model'
                     if m.checkpoint_shape is not None else f'{m.checkpoint_name} absent from the checkpoint'
                     for m in ordered], limit, '; ')


def check_scopes_match(scopes, variables, flag, what):
    """UserError naming `flag` when one of `scopes` matches none of `variables` (a typo would otherwise be
    ignored); the message lists the scopes that exist, two name components deep."""
    for scope in scopes:
        if not any(in_scopes(v.op.name, [scope]) for v in variables):
            valid = sorted({'/'.join(v.op.name.split('/')[:2]) for v in variables})
            raise UserError(f'{flag}: {scope!r} matches no {what} (valid scopes: {", ".join(valid)})')


def variables_to_train(scopes):
    """Trainable variables under the comma-separated `scopes` (all when empty); UserError for a scope
    that matches nothing."""
    trainable = tf.trainable_variables()
    scope_list = split_scopes(scopes)
    if not scope_list:
        return trainable
    check_scopes_match(scope_list, trainable, '--trainable_scopes', 'trainable variable')
    return [v for v in trainable if in_scopes(v.op.name, scope_list)]


# ---- Training: the restore chain ------------------------------------------------------------------------

def check_resume_compatible(prefix, variables):
    """UserError when the train_dir checkpoint lacks a graph variable or stores another shape. When all it
    lacks are optimizer state (slots of weights it holds, '.../weights/Adam', or an optimizer's own untrained
    variables such as Adam's beta1_power) or moving averages, the run's --trainable_scopes, --optimizer or
    --moving_average_decay differ from the ones that made it, and the error says which."""
    by_name = {v.op.name: v for v in variables}
    mismatches = find_mismatches(prefix, by_name)
    stored = read_variable_shapes(prefix) if mismatches else {}
    if mismatches and all(m.checkpoint_shape is None and (m.checkpoint_name.rsplit('/', 1)[0] in stored
                                                          or not by_name[m.checkpoint_name].trainable)
                          for m in mismatches):
        train_dir = os.path.dirname(prefix)
        state, cause = (('moving averages', 'without --moving_average_decay')
                        if all(m.checkpoint_name.endswith(MOVING_AVERAGE_SUFFIX) for m in mismatches) else
                        ('optimizer state', 'with other --trainable_scopes or another --optimizer'))
        raise UserError(f'{prefix}: this checkpoint in --train_dir holds the weights but not the {state} this run '
                        f'needs ({format_mismatches(mismatches)}): it was trained {cause}. Resume with its flags '
                        f'(training_config.txt there lists them), or train on from it in a new --train_dir with '
                        f'--checkpoint_path={train_dir}')
    if mismatches:
        raise UserError(f'{prefix}: this checkpoint in --train_dir was made by another model, dataset or '
                        f'optimizer ({format_mismatches(mismatches)}); use a new --train_dir, or delete the old '
                        f'checkpoints there to start again')


CLASS_HEAD_SUFFIX = '_box/conv_cls'   # the per-class score layers, the ones another class count changes


def plan_pretrained_restore(prefix, variables, model_scope, checkpoint_model_scope=None,
                            exclude_scopes=(), ignore_missing_vars=False):
    """Which `variables` (the model's weights) load from `prefix`, under which names.

    A variable under an exclude scope is skipped; the others are looked up under their own name with a
    leading `model_scope` replaced by `checkpoint_model_scope` (e.g. ssd_300_vgg/conv1/... ->
    vgg_16/conv1/...). Missing names are an error unless ignore_missing_vars; shape differences are always
    an error, naming the scopes to exclude.
    """
    kept = [v for v in variables if not in_scopes(v.op.name, exclude_scopes)]
    excluded = [v.op.name for v in variables if in_scopes(v.op.name, exclude_scopes)]
    var_map = checkpoint_variable_map(kept, model_scope, checkpoint_model_scope or None)
    mismatches = find_mismatches(prefix, var_map)
    wrong = [m for m in mismatches if m.checkpoint_shape is not None]
    missing = [m.checkpoint_name for m in mismatches if m.checkpoint_shape is None]
    if wrong:
        scopes = sorted({var_map[m.checkpoint_name].op.name.rsplit('/', 1)[0] for m in wrong})
        if all(scope.endswith(CLASS_HEAD_SUFFIX) for scope in scopes):
            advice = (f'if the number of classes differs, leave these layers out with '
                      f'--checkpoint_exclude_scopes={",".join(scopes)}')
        else:   # leaving every such layer out would be training from scratch
            advice = ('layers besides the class heads differ, so it is another network or width: train with the '
                      'flags it was trained with (--model_name, --depth_multiplier, --anchor_set)')
        raise UserError(f'{prefix}: shapes differ from this model ({format_mismatches(wrong)}); {advice}')
    if kept and len(missing) == len(kept):
        # Scopes only: global_step or Adam's beta1_power would hide the one that matters behind '(and 1 more)'.
        top_scopes = sorted({name.split('/', 1)[0] for name in read_variable_shapes(prefix) if '/' in name})
        if checkpoint_model_scope and model_scope in top_scopes:   # SSD-Tensorflow's second fine-tuning step
            raise UserError(f'{prefix}: its variables are under {model_scope}, this model\'s own scope, not '
                            f'{checkpoint_model_scope}: leave out --checkpoint_model_scope={checkpoint_model_scope}')
        raise UserError(f'{prefix}: none of this model\'s variables are in the checkpoint (its top-level '
                        f'scopes: {_listing(top_scopes) or "none"}); pass --checkpoint_model_scope=<its scope> '
                        f'to map them onto {model_scope}')
    if missing and not ignore_missing_vars:
        raise UserError(f'{prefix}: lacks {len(missing)} variable(s) of this model: {_listing(missing)}; '
                        f'leave their layers out with --checkpoint_exclude_scopes or pass --ignore_missing_vars')
    for name in missing:
        del var_map[name]
    return RestorePlan(var_map, excluded, missing)


def make_init_fn(prefix, plan, after_restore_op=None, log_fn=None):
    """init_fn(session) for slim.learning.train: loads plan.var_map from prefix, then runs
    after_restore_op (e.g. copying restored weights into moving averages). Built now, since the
    supervisor finalises the graph before calling it."""
    saver = tf.train.Saver(var_list=plan.var_map, name='pretrained_saver')

    def init_fn(session):
        saver.restore(session, prefix)
        if after_restore_op is not None:
            session.run(after_restore_op)
        if log_fn:
            log_fn(f'Restored {len(plan.var_map)} variables from {prefix}')
    return init_fn


def restore_chain(config, model_variables, model_scope, after_restore_op=None, log_fn=None):
    """init_fn for slim.learning.train following the chain of `config` (a RestoreConfig): resume
    config.resume_from (the supervisor restores it; checked here against the graph), else load
    config.pretrained into `model_variables`, else start from scratch. Returns None when there is nothing to
    run after the initialisers. Logs which, and how many variables come from where."""
    log_fn = log_fn or (lambda message: None)
    check_scopes_match(config.exclude_scopes, model_variables, '--checkpoint_exclude_scopes', 'model variable')
    if config.resume_from:
        check_resume_compatible(config.resume_from, tf.global_variables())
        step = tf.train.load_variable(config.resume_from, 'global_step')
        # Resumed with another --optimizer (or fewer trainable scopes), the checkpoint's optimizer state is
        # dropped: the next checkpoints lack it, and resuming with the earlier flags would then be refused.
        unused = sorted(set(read_variable_shapes(config.resume_from)) - {v.op.name for v in tf.global_variables()})
        log_fn(f'Resuming from {config.resume_from} at step {step}: all {len(tf.global_variables())} variables '
               f'(optimizer state included) come from it' + (
                   f'; warning: {len(unused)} of its variables are not used ({_listing(unused)}), the state of '
                   f'another --optimizer, --trainable_scopes or --moving_average_decay, and this run\'s checkpoints '
                   f'will not hold them'
                   if unused else ''))
        return None
    if not config.pretrained:
        log_fn(f'Starting from scratch: all {len(model_variables)} model variables initialised randomly')
        return None
    plan = plan_pretrained_restore(config.pretrained, model_variables, model_scope, config.checkpoint_model_scope,
                                   config.exclude_scopes, config.ignore_missing_vars)
    log_fn(f'Fine-tuning from {config.pretrained}: {len(plan.var_map)} variables restored, {len(plan.excluded)} '
           f'excluded by --checkpoint_exclude_scopes, {len(plan.missing)} missing from it and ignored; the '
           f'other {len(model_variables) - len(plan.var_map)} start from their initialisers')
    return make_init_fn(config.pretrained, plan, after_restore_op, log_fn)


def make_saver(max_to_keep=5, keep_checkpoint_every_n_hours=1.0, saver_class=tf.train.Saver, **extra):
    """The training checkpoint saver (V2 format, paths in the state file relative to train_dir)."""
    return saver_class(max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
                       write_version=tf.train.SaverDef.V2, pad_step_number=False, save_relative_paths=True,
                       **extra)


# ---- Inference: a trained network's weights -------------------------------------------------------------

def network_variables(network):
    """The network's global variables (weights, biases, L2-normalisation scales), by their own names."""
    return {variable.op.name: variable for variable in tf.global_variables(scope=network.scope + '/')}


def inference_variable_map(prefix, network, use_moving_averages=False):
    """{name in the checkpoint: variable} for the network. With use_moving_averages, a variable reads its
    ExponentialMovingAverage shadow ('<name>/ExponentialMovingAverage', written by training with
    --moving_average_decay) where the checkpoint has one, else its own value; UserError when the checkpoint
    holds no averages at all."""
    variables = network_variables(network)
    if not use_moving_averages:
        return variables
    stored = read_variable_shapes(prefix)
    names = tf.train.ExponentialMovingAverage(decay=0.0)   # only its naming rule is used
    mapping = {}
    for name, variable in variables.items():
        shadow = names.average_name(variable)
        mapping[shadow if shadow in stored else name] = variable
    if not set(mapping) - set(variables):
        raise UserError(f'{prefix}: holds no moving averages of the weights (train with --moving_average_decay, '
                        f'or evaluate without it)')
    return mapping


def check_checkpoint_fits(prefix, variables_map, config):
    """UserError naming the mismatched variables, the settings of `config` (the ModelConfig in use) and its
    refit_advice when the checkpoint lacks one of `variables_map` or stores another shape."""
    mismatches = find_mismatches(prefix, variables_map)
    if mismatches:
        raise UserError(f'{prefix}: does not fit the network built with {config.settings()}: '
                        f'{format_mismatches(mismatches)}; {config.refit_advice(prefix)}')


def restore_for_inference(session, saver, prefix, variables_map, config):
    """check_checkpoint_fits, then restore with `saver` (a tf.train.Saver over `variables_map`); read errors
    become UserError."""
    check_checkpoint_fits(prefix, variables_map, config)
    try:
        saver.restore(session, prefix)
    except (tf.errors.OpError, ValueError) as err:   # the reading's own error says why ('Graph execution error:')
        raise UserError(f'{prefix}: cannot restore ({unreadable_reason(prefix) or str(err).splitlines()[0]})') from None
