"""utils/script_setup.py: TensorFlow loads without its C++ start-up notices unless TF_CPP_MIN_LOG_LEVEL asks."""
import os
import subprocess
import sys

from tests.inference_fixtures import REPO_ROOT, assert_no_tensorflow_noise


def _import_script_setup(log_level):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=log_level)
    return subprocess.run([sys.executable, '-c', 'from utils import script_setup; import tensorflow'],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_start_up_notices_are_left_out_unless_asked_for():
    quiet = _import_script_setup('2')
    assert quiet.returncode == 0 and quiet.stderr == ''
    shown = _import_script_setup('0')
    assert 'oneDNN custom operations are on' in shown.stderr
    assert_no_tensorflow_noise(quiet.stderr)
