"""Where the weights come from: resume train_dir, else a pretrained checkpoint, else from scratch.

Checkpoints are compared with the graph before any session starts, so a stale train_dir or a
checkpoint of another model stops with the variable names and the remedy instead of TensorFlow's
opaque restore error.
"""
import collections
import glob
import os
import re

import tensorflow.compat.v1 as tf

from nets import nets_factory
from utils.errors import UserError

RestorePlan = collections.namedtuple('RestorePlan', [
    'var_map',     # {name in the checkpoint: graph variable} to restore
    'excluded',    # graph variable names left out by the exclude scopes
    'missing',     # graph names (after the scope mapping) absent from the checkpoint, ignored
])

MAX_LISTED = 3   # names shown in a message before '(and N more)'


def split_scopes(text):
    """'a, b/c,' -> ['a', 'b/c']: the comma-separated scope flags."""
    return [scope.strip().rstrip('/') for scope in (text or '').split(',') if scope.strip()]


def in_scopes(name, scopes):
    """True when variable `name` is one of the scopes or lies under one ('a/b' is under 'a', not 'a/bc')."""
    return any(name == scope or name.startswith(scope + '/') for scope in scopes)


def _listing(items, limit=MAX_LISTED, separator=', '):
    items = list(items)
    shown = separator.join(items[:limit])
    return shown + (f' (and {len(items) - limit} more)' if len(items) > limit else '')


def format_mismatches(mismatches, limit=MAX_LISTED):
    """One line for nets_factory.CheckpointMismatch items: 'name [84] in the checkpoint, [20] in the model'
    or 'name absent from the checkpoint', shape differences first (they tell the most), '; '-separated,
    the first `limit` then '(and N more)'."""
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


def _checkpoint_candidates(directory):
    """Checkpoint prefixes in a directory without a 'checkpoint' state file: V2 '<p>.index' and V1 '*.ckpt'."""
    prefixes = {path[:-len('.index')] for path in glob.glob(os.path.join(glob.escape(directory), '*.index'))}
    prefixes |= {path for path in glob.glob(os.path.join(glob.escape(directory), '*.ckpt'))
                 if os.path.isfile(path)}
    return sorted(prefixes)


def _strip_checkpoint_suffix(path):
    """'x.ckpt.index' / 'x.ckpt.meta' / 'x.ckpt.data-00000-of-00001' -> 'x.ckpt' (the prefix)."""
    return re.sub(r'\.(index|meta|data-\d+-of-\d+)$', '', path)


def _is_checkpoint(prefix):
    """A V2 checkpoint ('<prefix>.index') or a V1 one (the file itself, or its shards)."""
    return (os.path.isfile(prefix + '.index') or os.path.isfile(prefix)
            or bool(glob.glob(glob.escape(prefix) + '-?????-of-?????')))


def latest_train_checkpoint(train_dir):
    """The prefix train_dir's 'checkpoint' state file points to, or None."""
    return tf.train.latest_checkpoint(train_dir) if os.path.isdir(train_dir) else None


def _readable(prefix, flag):
    """prefix, after checking that TensorFlow can list its variables (UserError otherwise)."""
    try:
        tf.train.list_variables(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise UserError(f'{flag}={prefix}: not a readable TensorFlow checkpoint '
                        f'({str(err).splitlines()[0]})') from None
    return prefix


def resolve_pretrained(path, flag='--pretrained_path', missing_ok=False):
    """A checkpoint prefix from a prefix, a file of one, or a directory holding one; None for a directory
    with no checkpoint (start from scratch) or, with missing_ok, a path that does not exist."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, 'checkpoint')):
            prefix = tf.train.latest_checkpoint(path)
            if prefix is None:
                raise UserError(f'{flag}={path}: its checkpoint state file points to a missing checkpoint')
            return _readable(prefix, flag)
        candidates = _checkpoint_candidates(path)
        if len(candidates) > 1:
            raise UserError(f'{flag}={path}: holds several checkpoints ({_listing(candidates)}); '
                            f'pass the one to use')
        return _readable(candidates[0], flag) if candidates else None
    prefix = _strip_checkpoint_suffix(path)
    if not _is_checkpoint(prefix):
        if missing_ok:
            return None
        raise UserError(f'{flag}={path}: no such checkpoint or directory')
    return _readable(prefix, flag)


def _top_scopes(prefix):
    """Sorted first name components of a checkpoint's variables (for messages)."""
    return sorted({name.split('/', 1)[0] for name, _ in tf.train.list_variables(prefix)})


def check_resume_compatible(prefix, variables):
    """UserError when the train_dir checkpoint lacks a graph variable or stores another shape."""
    mismatches = nets_factory.check_checkpoint_compatibility(prefix, {v.op.name: v for v in variables})
    if mismatches:
        raise UserError(f'{prefix}: this checkpoint in --train_dir was made by another model, dataset or '
                        f'optimizer ({format_mismatches(mismatches)}); use a new --train_dir, or delete the old '
                        f'checkpoints there to start again')


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
    var_map = nets_factory.checkpoint_variable_map(kept, model_scope, checkpoint_model_scope or None)
    mismatches = nets_factory.check_checkpoint_compatibility(prefix, var_map)
    wrong = [m for m in mismatches if m.checkpoint_shape is not None]
    missing = [m.checkpoint_name for m in mismatches if m.checkpoint_shape is None]
    if wrong:
        scopes = sorted({var_map[m.checkpoint_name].op.name.rsplit('/', 1)[0] for m in wrong})
        raise UserError(f'{prefix}: shapes differ from this model ({format_mismatches(wrong)}); if the number of '
                        f'classes differs, leave these layers out with --checkpoint_exclude_scopes='
                        f'{",".join(scopes)}')
    if kept and len(missing) == len(kept):
        raise UserError(f'{prefix}: none of this model\'s variables are in the checkpoint (its top-level '
                        f'scopes: {_listing(_top_scopes(prefix))}); pass --checkpoint_model_scope=<its scope> '
                        f'to map them onto {model_scope}')
    if missing and not ignore_missing_vars:
        raise UserError(f'{prefix}: lacks {len(missing)} variable(s) of this model: {_listing(missing)}; '
                        f'leave their layers out with --checkpoint_exclude_scopes or pass '
                        f'--ignore_missing_vars')
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


def restore_chain(resume_from, pretrained, model_variables, model_scope, checkpoint_model_scope=None,
                  exclude_scopes=(), ignore_missing_vars=False, after_restore_op=None, log_fn=None):
    """init_fn for slim.learning.train following the chain: resume `resume_from` (the supervisor restores
    it; checked here against the graph), else load `pretrained` into `model_variables`, else start from
    scratch. Returns None when there is nothing to run after the initialisers. Logs which, and how many
    variables come from where."""
    log_fn = log_fn or (lambda message: None)
    check_scopes_match(exclude_scopes, model_variables, '--checkpoint_exclude_scopes', 'model variable')
    if resume_from:
        check_resume_compatible(resume_from, tf.global_variables())
        step = tf.train.load_variable(resume_from, 'global_step')
        log_fn(f'Resuming from {resume_from} at step {step}: all {len(tf.global_variables())} variables '
               f'(optimizer state included) come from it')
        return None
    if not pretrained:
        log_fn(f'Starting from scratch: all {len(model_variables)} model variables initialised randomly')
        return None
    plan = plan_pretrained_restore(pretrained, model_variables, model_scope, checkpoint_model_scope,
                                   exclude_scopes, ignore_missing_vars)
    log_fn(f'Fine-tuning from {pretrained}: {len(plan.var_map)} variables restored, {len(plan.excluded)} '
           f'excluded by --checkpoint_exclude_scopes, {len(plan.missing)} missing from it and ignored; the '
           f'other {len(model_variables) - len(plan.var_map)} start from their initialisers')
    return make_init_fn(pretrained, plan, after_restore_op, log_fn)


def variables_to_train(scopes):
    """Trainable variables under the comma-separated `scopes` (all when empty); UserError for a scope
    that matches nothing."""
    trainable = tf.trainable_variables()
    scope_list = split_scopes(scopes)
    if not scope_list:
        return trainable
    check_scopes_match(scope_list, trainable, '--trainable_scopes', 'trainable variable')
    return [v for v in trainable if in_scopes(v.op.name, scope_list)]
