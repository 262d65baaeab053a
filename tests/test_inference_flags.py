"""The inference tools' shared flags: --moving_average_decay follows TF-Slim's rule (0 or unset: the weights)."""
import pytest
from absl import flags

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
