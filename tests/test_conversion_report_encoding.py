"""conversion_report.txt is UTF-8 whatever the locale's encoding (Windows' cp1252 has no Chinese or Cyrillic):
writing a class name there must not fail the conversion after all its work."""
import os
import subprocess
import sys

from tests.test_voc_to_tfrecords import REPO_ROOT, jpeg_bytes, write_sample


def test_report_naming_a_class_is_written_under_an_ascii_locale(tmp_path):
    write_sample(tmp_path, 'a', [('café', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(tmp_path, 'b', [('可乐', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    (tmp_path / 'labels.txt').write_text('café\n', encoding='utf-8')
    # The C locale without coercion gives open() ASCII; the console stays UTF-8.
    env = {**os.environ, 'LC_ALL': 'C', 'LANG': 'C', 'PYTHONCOERCECLOCALE': '0', 'PYTHONUTF8': '0',
           'PYTHONIOENCODING': 'utf-8'}
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tf_convert_data.py'), f'--dataset_dir={tmp_path}',
                           f'--output_dir={tmp_path / "out"}'], cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode('utf-8', 'replace')[-2000:]
    report = (tmp_path / 'out' / 'conversion_report.txt').read_text(encoding='utf-8')
    assert "class '可乐' not in the label list" in report
