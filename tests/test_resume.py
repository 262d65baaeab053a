"""utils/resume.py: which train_dir checkpoint a training resumes when the state file fails, and the leftovers of
a save cut short."""
import os

import pytest
import tensorflow.compat.v1 as tf

from utils import resume
from utils.errors import UserError


def _three_checkpoints(folder):
    with tf.Graph().as_default():
        weight = tf.Variable(tf.zeros([1000]), name='w')
        saver = tf.train.Saver()
        with tf.Session() as session:
            session.run(weight.initializer)
            for step in (10, 20, 30):
                saver.save(session, str(folder / 'model.ckpt'), global_step=step)
    return [str(folder / f'model.ckpt-{step}') for step in (10, 20, 30)]


def test_resume_takes_the_newest_checkpoint_that_reads_back_when_the_state_file_fails(tmp_path):
    """Without this, slim's supervisor finds no state, starts from scratch and saves over the checkpoints."""
    ten, twenty, thirty = _three_checkpoints(tmp_path)
    state = tmp_path / 'checkpoint'
    assert resume.checkpoint_to_resume(str(tmp_path)) == (thirty, None)
    good_state = state.read_text()
    state.unlink()
    assert resume.checkpoint_to_resume(str(tmp_path)) == (thirty, f'the newest checkpoint that reads back '
                                                                       f'whole: {state} is missing')
    state.write_text('garbage')
    assert resume.checkpoint_to_resume(str(tmp_path))[1].endswith(f'{state} is damaged')
    state.write_text(good_state)
    with open(thirty + '.data-00000-of-00001', 'r+b') as data:   # cut short, as a crash or a full disk leaves it
        data.truncate(100)
    prefix, note = resume.checkpoint_to_resume(str(tmp_path))
    assert prefix == twenty and note.startswith(f'the newest checkpoint that reads back whole: {state} names '
                                                f'model.ckpt-30, which cannot be read (')
    resume.point_state_file_at(str(tmp_path), twenty)
    assert tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths == [ten, twenty]
    for path in tmp_path.glob('model.ckpt-*.data-*'):
        path.write_bytes(b'')
    with pytest.raises(UserError, match=r"--train_dir=.*: its checkpoint model.ckpt-20 cannot be read \(.*\) and no "
                                        r"other checkpoint there can; move the folder aside to start again"):
        resume.checkpoint_to_resume(str(tmp_path))
    assert resume.checkpoint_to_resume(str(tmp_path / 'absent')) == (None, None)


def test_unfinished_saves_are_removed_and_nothing_else(tmp_path):
    left = ['model.ckpt-2.data-00000-of-00001.tempstate18269105204775312479',
            'model.ckpt-10.meta.tmp0d7308c66e1b4b9896136d842cc68b89', 'checkpoint.tmp5f2e']
    kept = ['model.ckpt-2.data-00000-of-00001', 'model.ckpt-2.index', 'checkpoint', 'notes.tmp1', 'events.out.x']
    for name in left + kept:
        (tmp_path / name).write_text('x')
    assert resume.remove_unfinished_saves(str(tmp_path)) == sorted(left)
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
