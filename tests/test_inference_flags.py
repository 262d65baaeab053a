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
