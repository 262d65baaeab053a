"""Test-wide settings: quiet TensorFlow, oneDNN kernels on (see README), graph mode."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()
