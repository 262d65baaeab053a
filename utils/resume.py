"""The train_dir's own checkpoints when training starts: which one to resume (the state file's, else the newest
that reads back whole, after a crash or a partial copy), the state file made to name it, and the temporary files
of a save a killed run cut short. utils/checkpoints.py reads and maps checkpoints; this module decides about a
train_dir's.
"""
import glob
import os
import re

import tensorflow.compat.v1 as tf

from utils.checkpoints import CHECKPOINT_BASENAME, checkpoint_name_step, state_file_checkpoint, unreadable_reason
from utils.errors import UserError


def _train_checkpoints(train_dir):
    """The model.ckpt-N prefixes in train_dir that have an index file, newest (highest N) first."""
    pattern = os.path.join(glob.escape(train_dir), glob.escape(CHECKPOINT_BASENAME) + '-*.index')
    prefixes = [os.path.normpath(path[:-len('.index')]) for path in glob.glob(pattern)]
    return sorted((p for p in prefixes if checkpoint_name_step(p) is not None), key=checkpoint_name_step, reverse=True)


def checkpoint_to_resume(train_dir):
    """(prefix, note): the checkpoint training resumes from train_dir, or (None, None) when it holds none.

    It is the one the 'checkpoint' state file names, when that reads back whole; else the newest model.ckpt-N
    that does, with a note saying why (the state file missing or unreadable after a crash or a copy, or naming
    a checkpoint deleted or damaged): slim's supervisor would otherwise start from scratch and save over them."""
    if not os.path.isdir(train_dir):
        return None, None
    named = state_file_checkpoint(train_dir)
    named = os.path.normpath(named) if named else None   # as _train_checkpoints' names, to compare them
    problem = ''
    if named:
        problem = unreadable_reason(named) if os.path.isfile(named + '.index') else 'it is gone'
        if not problem:
            return named, None
    for prefix in _train_checkpoints(train_dir):
        if prefix != named and not unreadable_reason(prefix):
            state_file = os.path.join(train_dir, 'checkpoint')
            why = (f'{state_file} names {os.path.basename(named)}, which cannot be read ({problem})' if named
                   else f'{state_file} is damaged' if os.path.isfile(state_file) else f'{state_file} is missing')
            return prefix, f'the newest checkpoint that reads back whole: {why}'
    if named:
        raise UserError(f'--train_dir={train_dir}: its checkpoint {os.path.basename(named)} cannot be read ({problem}) '
                        f'and no other checkpoint there can; move the folder aside to start again')
    return None, None


# What a save killed midway leaves: TensorFlow's temporary files of the data, index, meta and state files.
_UNFINISHED_SAVE = re.compile(rf'({re.escape(CHECKPOINT_BASENAME)}-\d+\..+|checkpoint)\.(tempstate\d+|tmp[0-9a-f]+)')


def remove_unfinished_saves(train_dir):
    """Deletes the temporary files of saves that a killed training left in train_dir; -> their names. Only for
    the one training that holds train_dir (file_io.exclusive_use): another's would be saves in progress."""
    names = sorted(name for name in os.listdir(train_dir) if _UNFINISHED_SAVE.fullmatch(name))
    for name in names:
        os.remove(os.path.join(train_dir, name))
    return names


def point_state_file_at(train_dir, prefix):
    """Rewrites train_dir's 'checkpoint' state file (atomically) to name `prefix`, the older checkpoints listed
    before it, so that slim's supervisor restores it and the Saver keeps counting the ones it may delete."""
    step = checkpoint_name_step(prefix)
    older = [p for p in reversed(_train_checkpoints(train_dir)) if checkpoint_name_step(p) < step]
    tf.train.update_checkpoint_state(train_dir, prefix, all_model_checkpoint_paths=older + [prefix])
