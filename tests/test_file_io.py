"""utils/file_io: atomic writes (old file survives a failure, new one whole, umask mode); JSON read errors."""
import json
import os
import subprocess
import sys

import pytest

from utils import file_io
from utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_json_written_whole_and_readable_by_others(tmp_path):
    path = tmp_path / 'sub' / 'out.json'
    file_io.write_json_atomically(str(path), {'a': [1, 2]})
    assert json.loads(path.read_text()) == {'a': [1, 2]}
    assert path.read_text().endswith('\n')
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(path.parent) == ['out.json']          # no temporary file left


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'out.json'
    file_io.write_json_atomically(str(path), {'version': 1})

    def interrupted_replace(source, target):
        raise OSError('disk full')

    monkeypatch.setattr(file_io.os, 'replace', interrupted_replace)
    with pytest.raises(OSError, match='disk full'):
        file_io.write_json_atomically(str(path), {'version': 2})
    assert json.loads(path.read_text()) == {'version': 1}
    assert os.listdir(tmp_path) == ['out.json']              # the temporary file was removed


@pytest.mark.parametrize('content, problem', [('{"a": ', 'not valid JSON'), ('[1, 2]', 'expected a JSON object')])
def test_bad_json_is_one_line_naming_the_file(tmp_path, content, problem):
    path = tmp_path / 'info.json'
    path.write_text(content)
    with pytest.raises(UserError, match=problem) as raised:
        file_io.read_json_object(str(path))
    assert str(raised.value).startswith(str(path) + ': ') and '\n' not in str(raised.value)


def test_output_folder_may_be_new_or_existing(tmp_path):
    file_io.check_writable_folder(str(tmp_path), '--output_dir')
    file_io.check_writable_folder(str(tmp_path / 'new' / 'deeper'), '--output_dir')
    file_io.check_writable_file(str(tmp_path / 'new' / 'model.tflite'), '--output_file')
    assert os.listdir(tmp_path) == []                       # a check, not a mkdir


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs Linux /proc')
def test_a_folder_where_nothing_can_be_created_is_one_line_even_for_root():
    """os.access lets root write in /proc (another user has no permission); creating a file there fails."""
    with pytest.raises(UserError, match=r'^--output_dir=/proc/x: (cannot|no permission to) write in /proc'):
        file_io.check_writable_folder('/proc/x', '--output_dir')
    with pytest.raises(UserError, match=r'^--results_json=/proc/x.json: (cannot|no permission to) write in /proc'):
        file_io.check_writable_file('/proc/x.json', '--results_json')


def test_a_file_in_the_way_of_an_output_folder_is_one_line_naming_it(tmp_path):
    taken = tmp_path / 'taken'
    taken.write_text('x')
    with pytest.raises(UserError, match=f'^--train_dir={taken}: is a file, not a folder$'):
        file_io.check_writable_folder(str(taken), '--train_dir')
    with pytest.raises(UserError, match=f'^--output_dir={taken}/run/1: {taken} is a file, not a folder$'):
        file_io.check_writable_folder(str(taken / 'run' / '1'), '--output_dir')
    with pytest.raises(UserError, match=f'^--output_file={taken}/m.tflite: {taken} is a file, not a folder$'):
        file_io.check_writable_file(str(taken / 'm.tflite'), '--output_file')
    with pytest.raises(UserError, match=f'^--results_json={tmp_path}: is a folder; give a file name$'):
        file_io.check_writable_file(str(tmp_path), '--results_json')


@pytest.mark.parametrize('script, args, flag', [
    ('deployment/export_serving_model.py', ['--checkpoint_path={missing}'], '--output_dir'),
    ('deployment/export_tflite.py', ['--checkpoint_path={missing}'], '--output_file'),
    ('tf_convert_data.py', ['--dataset_dir={missing}'], '--output_dir'),
    ('eval_ssd_network.py', ['--dataset_dir={missing}', '--checkpoint_path={missing}'], '--eval_dir'),
    ('eval_ssd_network.py', ['--dataset_dir={missing}', '--checkpoint_path={missing}'], '--plot_dir'),
    ('eval_ssd_network.py', ['--dataset_dir={missing}', '--checkpoint_path={missing}'], '--results_json'),
])
def test_each_script_checks_its_output_path_before_its_work(tmp_path, script, args, flag):
    """The file in the way is named before the script reads its (here missing) checkpoint or dataset."""
    from tests.inference_fixtures import run_script
    taken = tmp_path / 'taken'
    taken.write_text('x')
    output = taken / 'out' if flag in ('--results_json', '--output_file') else taken   # a file's folder
    result = run_script([script] + [arg.format(missing=tmp_path / 'missing') for arg in args]
                        + [f'{flag}={output}'])
    assert result.returncode == 1
    where = f'{taken} is a file' if output != taken else 'is a file'
    assert result.stderr.strip().splitlines()[-1] == (
        f'{os.path.basename(script)}: error: {flag}={output}: {where}, not a folder')


def test_a_folder_in_exclusive_use_refuses_a_second_user_until_released(tmp_path):
    folder = tmp_path / 'train'
    with file_io.exclusive_use(str(folder), '--train_dir'):
        holder = (folder / file_io.LOCK_FILENAME).read_text().strip()
        assert holder.startswith(f'process {os.getpid()} on ')
        with pytest.raises(UserError, match=f'^--train_dir={folder}: {holder} is training in it; wait for it to end '
                                            f'or give another --train_dir'):
            with file_io.exclusive_use(str(folder), '--train_dir'):
                pass
    with file_io.exclusive_use(str(folder), '--train_dir'):   # released at the end of the block
        pass


def test_text_and_json_are_utf8_whatever_the_locale(tmp_path):
    """Class names in any script: under the C locale open() would encode ASCII (Windows: cp1252) and fail on
    them; JSON keeps them readable, not as \\u escapes."""
    # ASCII source (\u escapes): the C locale's command line takes no other.
    script = (r'import sys; from utils import file_io; folder = sys.argv[1]; '
              r'file_io.write_text_atomically(folder + "/t.txt", "\u751f\u62bd caf\u00e9\n"); '
              r'file_io.write_json_atomically(folder + "/j.json", {"names": ["\u53ef\u4e50"]}); '
              r'print(file_io.read_json_object(folder + "/j.json")["names"][0] == "\u53ef\u4e50")')
    env = {**os.environ, 'LC_ALL': 'C', 'LANG': 'C', 'PYTHONCOERCECLOCALE': '0', 'PYTHONUTF8': '0',
           'PYTHONIOENCODING': 'utf-8'}
    done = subprocess.run([sys.executable, '-c', script, str(tmp_path)], cwd=REPO_ROOT, env=env, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode('utf-8', 'replace')[-2000:]
    assert done.stdout.decode().strip() == 'True'
    assert (tmp_path / 't.txt').read_bytes() == '生抽 café\n'.encode('utf-8')
    assert '"可乐"' in (tmp_path / 'j.json').read_text(encoding='utf-8')


def test_every_tool_prints_utf8_whatever_the_console_encoding():
    """utils/script_setup, which every tool imports first: a table or message naming '可乐' printed to a cp1252
    stdout or stderr (a redirect on Windows) must not fail after the work."""
    script = r'import sys; import utils.script_setup; print("\u53ef\u4e50"); print("\u53ef\u4e50", file=sys.stderr)'
    done = subprocess.run([sys.executable, '-c', script], cwd=REPO_ROOT, capture_output=True, timeout=120,
                          env={**os.environ, 'PYTHONIOENCODING': 'cp1252'})
    assert done.returncode == 0, done.stderr.decode('utf-8', 'replace')[-2000:]
    assert done.stdout.decode('utf-8').strip() == '可乐' and done.stderr.decode('utf-8').strip().endswith('可乐')
