"""utils/atomic_write: the old file survives a failed write; the new one appears whole, with umask mode."""
import json
import os

import pytest

from utils import atomic_write


def test_json_written_whole_and_readable_by_others(tmp_path):
    path = tmp_path / 'sub' / 'out.json'
    atomic_write.write_json_atomically(str(path), {'a': [1, 2]})
    assert json.loads(path.read_text()) == {'a': [1, 2]}
    assert path.read_text().endswith('\n')
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(path.parent) == ['out.json']          # no temporary file left


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'out.json'
    atomic_write.write_json_atomically(str(path), {'version': 1})

    def interrupted_replace(source, target):
        raise OSError('disk full')

    monkeypatch.setattr(atomic_write.os, 'replace', interrupted_replace)
    with pytest.raises(OSError, match='disk full'):
        atomic_write.write_json_atomically(str(path), {'version': 2})
    assert json.loads(path.read_text()) == {'version': 1}
    assert os.listdir(tmp_path) == ['out.json']              # the temporary file was removed
