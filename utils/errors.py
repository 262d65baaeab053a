"""The error type for problems a user can fix (bad flags, bad files).

Its message is one line that names the file or flag and the problem; the top-level scripts print it and
exit 1 instead of showing a traceback from deep inside TensorFlow.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one clear line."""
