"""utils/script_setup.py: TensorFlow loads without its C++ start-up notices unless TF_CPP_MIN_LOG_LEVEL asks;
log lines are a time and the message."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.inference_fixtures import REPO_ROOT, assert_no_tensorflow_noise
from utils.script_setup import PlainLogFormat


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


def test_ctrl_c_while_tensorflow_loads_is_one_line_not_a_traceback(tmp_path):
    """Ctrl-C in the seconds TensorFlow takes to import, before run_main: the same '<script>: stopped' as
    later, and the process ends by SIGINT. The Ctrl-C is a KeyboardInterrupt raised by TensorFlow's import."""
    script = tmp_path / 'tool.py'
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT)!r})

        class CtrlCOnTensorFlow:
            def find_spec(self, name, path=None, target=None):
                if name == 'tensorflow':
                    raise KeyboardInterrupt

        sys.meta_path.insert(0, CtrlCOnTensorFlow())
        from utils import script_setup
        """))
    stopped = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert (stopped.returncode, stopped.stderr) == (-signal.SIGINT, 'tool.py: stopped\n')


def _formatted(level, message):
    record = logging.LogRecord('absl', level, 'x.py', 1, message, None, None)
    record.created = 1764919225.5   # 07:20:25.5 UTC
    return PlainLogFormat().format(record)


def test_log_lines_are_the_time_and_the_message(monkeypatch):
    monkeypatch.setenv('TZ', 'UTC')
    time.tzset()
    try:
        assert _formatted(logging.INFO, 'step 10: loss 1.0') == '07:20:25 step 10: loss 1.0'
        assert _formatted(logging.WARNING, 'SIGINT received') == '07:20:25 warning: SIGINT received'
        assert _formatted(logging.WARNING, 'warning: said once') == '07:20:25 warning: said once'
        assert _formatted(logging.ERROR, 'lost') == '07:20:25 error: lost'
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_full_disk_is_one_line_whichever_thread_meets_it_first():
    program = (
        'import threading\n'
        'from absl import flags\n'
        'from utils import script_setup\n'
        'def main(_):\n'
        '    def writer():\n'
        '        raise RuntimeError("out/events.x; No space left on device")\n'
        '    thread = threading.Thread(target=writer)\n'
        '    thread.start()\n'
        '    thread.join()\n'
        '    raise OSError(28, "No space left on device", "out/model.ckpt-20.index")\n'
        'script_setup.run_main(main, flags.FLAGS, graph_mode=False)\n')
    result = subprocess.run([sys.executable, '-c', program], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "-c: error: [Errno 28] No space left on device: 'out/model.ckpt-20.index': free some space and run the same "
        "command again (files are replaced only when complete: the last checkpoint or records are intact)"]
