"""The devices a script runs on: GPU count and the one tf.Session configuration every script uses (so thread
and memory settings change in one place)."""
import os

import tensorflow.compat.v1 as tf
from tensorflow.python.util import _pywrap_util_port

from nets import ssd_layers


def visible_gpu_count():
    return len(tf.config.list_physical_devices('GPU'))


def session_config(gpu_memory_fraction=None, cpu_devices=1, device_filters=None, operation_timeout_secs=0):
    """ConfigProto: soft placement (so CPU-only kernels fall back), `cpu_devices` logical CPU devices (one per
    CPU clone), the GPU memory fraction when given, device filters for distributed workers, and, when
    operation_timeout_secs > 0, that bound on every blocking call (a cluster worker whose parameter server
    stops answering without closing its connection gets DeadlineExceededError, not a hang)."""
    config = tf.ConfigProto(allow_soft_placement=True, log_device_placement=False, device_count={'CPU': cpu_devices})
    if gpu_memory_fraction is not None:
        config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
    if device_filters:
        config.device_filters.extend(device_filters)
    if operation_timeout_secs:
        config.operation_timeout_in_ms = int(operation_timeout_secs * 1000)
    return config


def kernel_description(data_format):
    """One line for the start-up report: which kernels run the network, its layout, and conv6's form."""
    if _pywrap_util_port.IsMklEnabled():
        library = 'oneDNN (TF_ENABLE_ONEDNN_OPTS=1)'
    else:
        library = f'TensorFlow\'s own (oneDNN off: TF_ENABLE_ONEDNN_OPTS={os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")})'
    conv6 = ('one dilated convolution' if ssd_layers.native_dilation_available()
             else 'space_to_batch (these kernels take no dilation)')
    return f'kernels: {library}, layout {data_format}, conv6 as {conv6}; {os.cpu_count()} CPU cores'
