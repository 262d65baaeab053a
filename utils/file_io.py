"""The project's small JSON and text files: written atomically, read with one-line errors.

Writing goes to a temporary file in the target's folder, then os.replace swaps it in (atomic on POSIX
and Windows within one file system): a reader or a crash never sees half a file.
"""
import contextlib
import json
import os
import socket
import tempfile

try:
    import fcntl
except ImportError:   # Windows: no advisory locks; exclusive_use then guards nothing
    fcntl = None

from utils.errors import UserError

LOCK_FILENAME = '.lock'


def write_text_atomically(path, text):
    """Write `text` to `path` atomically, in UTF-8 whatever the locale (class names in any script); the file's
    mode follows the umask like a plain open()."""
    _write_atomically(path, text, 'w')


def write_bytes_atomically(path, data):
    """write_text_atomically for bytes (a model file)."""
    _write_atomically(path, data, 'wb')


def _write_atomically(path, content, mode):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '-', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(handle, mode, encoding=None if 'b' in mode else 'utf-8') as out:
            out.write(content)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)  # mkstemp makes files private; these are not secret
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def write_json_atomically(path, payload):
    """`payload` as indented JSON (newline-terminated) to `path`, atomically; names in any script kept readable
    ("café", not "caf\\u00e9"), the file being UTF-8."""
    write_text_atomically(path, json.dumps(payload, indent=2, ensure_ascii=False) + '\n')


def check_writable_folder(path, flag):
    """UserError naming `flag` unless `path` is a folder, or can be made one, that this process may write in:
    the nearest existing of `path` and its parents must be a writable folder. Scripts call it before their
    work, so a mistyped output path costs one line at start-up, not a traceback after the work."""
    _check_writable(os.path.abspath(path), path, flag)


def check_writable_file(path, flag):
    """check_writable_folder for a file to write: `path` must not be a folder, and its folder must do."""
    if os.path.isdir(path):
        raise UserError(f'{flag}={path}: is a folder; give a file name')
    _check_writable(os.path.dirname(os.path.abspath(path)), path, flag)


def _check_writable(folder, path, flag):
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = 'is a file' if existing == os.path.abspath(path) else f'{existing} is a file'
        raise UserError(f'{flag}={path}: {where}, not a folder')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f'{flag}={path}: no permission to write in {existing}')
    try:   # root passes os.access where nothing can be created (/proc, a read-only mount)
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise UserError(f'{flag}={path}: cannot write in {existing} ({err.strerror})') from None


def make_writable_folder(path, flag):
    """check_writable_folder, then the folder (and its parents) made now, before the script's work."""
    check_writable_folder(path, flag)
    os.makedirs(path, exist_ok=True)


def read_json_object(path):
    """The JSON object (dict) in `path`; UserError naming the file when it is unreadable or not an object."""
    try:
        with open(path, encoding='utf-8') as source:
            payload = json.load(source)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f'{path}: not valid JSON ({err})') from None
    if not isinstance(payload, dict):
        raise UserError(f'{path}: expected a JSON object')
    return payload


@contextlib.contextmanager
def exclusive_use(folder, flag):
    """Holds an exclusive advisory lock on folder/.lock (made with the folder if need be) while the block runs;
    UserError naming `flag` and the holder when another process holds it. The operating system drops the lock
    when the holder ends, however it ends: no stale lock to clear after a crash."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_FILENAME), 'a+') as lock:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.seek(0)
                holder = lock.read().strip() or 'another process'
                raise UserError(f'{flag}={folder}: {holder} is training in it; wait for it to end or give another '
                                f'{flag} (two trainings in one folder save over each other\'s checkpoints)') from None
        lock.seek(0)
        lock.truncate()
        lock.write(f'process {os.getpid()} on {socket.gethostname()}\n')
        lock.flush()
        yield
