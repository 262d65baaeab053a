"""The inference tools' shared flags: --moving_average_decay follows TF-Slim's rule (0 or unset: the weights);
each tool's --help lists them."""
import pytest
from absl import flags

from tests.inference_fixtures import run_script
from utils import inference_flags
from utils.errors import UserError


def parsed(*args):
    fv = flags.FlagValues()
    flags.DEFINE_float('moving_average_decay', None, '', flag_values=fv)
    fv(['tool'] + list(args))
    return fv


def test_moving_average_decay_is_a_decay_not_a_switch():
    assert not inference_flags.use_moving_averages(parsed())
    assert not inference_flags.use_moving_averages(parsed('--moving_average_decay=0'))
    assert inference_flags.use_moving_averages(parsed('--moving_average_decay=0.9999'))
    with pytest.raises(UserError, match=r'--moving_average_decay=1.5: must be in \(0, 1\)'):
        inference_flags.use_moving_averages(parsed('--moving_average_decay=1.5'))


@pytest.mark.parametrize('script, own_flag, score_flag', [
    ('deployment/export_serving_model.py', '--output_dir', '--select_threshold'),
    ('deployment/export_tflite.py', '--output_file', '--select_threshold'),
    ('detect.py', '--images', '--score_threshold'),
    ('eval_ssd_network.py', '--dataset_dir', '--select_threshold')])
def test_help_lists_the_shared_flags_beside_the_scripts_own(script, own_flag, score_flag):
    """Flags defined in utils/inference_flags.py are absl key flags of each tool, not only in --helpfull."""
    listed = run_script([script, '--help']).stdout
    assert all(f'  {name}:' in listed for name in (own_flag, score_flag, '--checkpoint_path', '--keep_top_k'))


def postprocess_flags(score_flag, *args):
    fv = flags.FlagValues()
    flags.DEFINE_float(score_flag, 0.01, '', flag_values=fv)
    flags.DEFINE_float('nms_threshold', 0.45, '', flag_values=fv)
    flags.DEFINE_integer('select_top_k', 400, '', flag_values=fv)
    flags.DEFINE_integer('keep_top_k', 200, '', flag_values=fv)
    fv(['tool'] + list(args))
    return fv


def test_postprocess_options_take_the_flags_values():
    options = inference_flags.postprocess_options(postprocess_flags('score_threshold', '--score_threshold=1',
                                                                    '--nms_threshold=0', '--keep_top_k=1'),
                                                  'score_threshold')
    assert options == dict(score_threshold=1.0, nms_threshold=0.0, top_k=400, keep_top_k=1)


@pytest.mark.parametrize('arg, message', [
    ('--select_threshold=1.5', '--select_threshold=1.5: must be in [0, 1]'),
    ('--select_threshold=-0.1', '--select_threshold=-0.1: must be in [0, 1]'),
    ('--nms_threshold=2', '--nms_threshold=2: must be in [0, 1]'),
    ('--nms_threshold=-0.5', '--nms_threshold=-0.5: must be in [0, 1]'),
    ('--select_top_k=0', '--select_top_k=0: must be >= 1'),
    ('--keep_top_k=0', '--keep_top_k=0: must be >= 1')])
def test_postprocess_values_that_cannot_work_are_one_line_naming_the_flag(arg, message):
    with pytest.raises(UserError) as raised:
        inference_flags.postprocess_options(postprocess_flags('select_threshold', arg))
    assert str(raised.value) == message


@pytest.mark.parametrize('script, args', [
    ('eval_ssd_network.py', ['--dataset_dir=absent', '--checkpoint_path=absent', '--keep_top_k=0']),
    ('eval_ssd_network.py', ['--dataset_dir=absent', '--checkpoint_path=absent', '--eval_dir=/proc/x']),
    ('detect.py', ['--images=absent.jpg', '--checkpoint_path=absent', '--output_dir=/proc/x']),
    ('detect.py', ['--images=absent.jpg', '--checkpoint_path=absent', '--output_dir={tmp}', '--nms_threshold=2'])])
def test_tools_refuse_the_flags_before_looking_at_checkpoint_and_data(script, args, tmp_path):
    """The flag given last is refused in one line; the checkpoint and data (absent) are not looked at first.
    /proc passes a permission test for root, yet nothing can be created in it."""
    result = run_script([script] + [arg.format(tmp=tmp_path) for arg in args])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f'{script}: error: {args[-1]}: '), result.stderr[-2000:]
