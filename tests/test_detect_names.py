"""detect.py's JSON lines keep class names and file names in any script readable."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# detect.py in a fresh process (its flags would clash with other scripts' in this one), with a stand-in network.
_SCRIPT = '''
import sys
import numpy as np
import detect
detections = {'detection_boxes': np.array([[0.1, 0.2, 0.5, 0.6]]), 'detection_classes': np.array([2]),
              'detection_scores': np.array([0.9]), 'num_detections': 1}
detect.detect_and_draw(lambda image: detections, sys.argv[1], ['none', 'café', '生抽酱油'], 0.5)
'''


@pytest.mark.parametrize('stdout_encoding', ['utf-8', 'cp1252'])   # cp1252: Windows' redirected stdout
def test_json_lines_show_names_as_written(tmp_path, stdout_encoding):
    path = str(tmp_path / '可乐.png')
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    done = subprocess.run([sys.executable, '-c', _SCRIPT, path], cwd=REPO_ROOT, capture_output=True, timeout=120,
                          env={**os.environ, 'PYTHONIOENCODING': stdout_encoding})
    assert done.returncode == 0, done.stderr.decode('utf-8', 'replace')[-2000:]
    line = done.stdout.decode('utf-8').strip()
    assert '"class": "生抽酱油"' in line and '可乐.png' in line and '\\u' not in line
    assert json.loads(line)['class'] == '生抽酱油'
