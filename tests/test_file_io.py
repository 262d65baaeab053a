"""utils/file_io: atomic writes (old file survives a failure, new one whole, umask mode); JSON read errors."""
import json
import os

import pytest

from utils import file_io
from utils.errors import UserError


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
