"""The devices a script runs on: GPU count and the one tf.Session configuration every script uses (so thread
and memory settings change in one place)."""
import os

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2
from tensorflow.python.util import _pywrap_util_port

from nets import ssd_layers
from utils.host import cpu_flags


def visible_gpu_count():
    return len(tf.config.list_physical_devices('GPU'))


def cpu_has_bfloat16(cpuinfo_path='/proc/cpuinfo'):
    """True when the CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16 in its Linux flags), where oneDNN
    runs bfloat16 convolutions fast; False elsewhere (no such file included)."""
    return bool(cpu_flags(cpuinfo_path) & {'avx512_bf16', 'amx_bf16'})


def onednn_on_avx2(data_format, use_gpus, cpuinfo_path='/proc/cpuinfo'):
    """Whether oneDNN runs this training's NHWC convolutions on a CPU with AVX2 (AVX-512 or not): where a narrow
    network's small convolutions gain little from splitting over threads, so it trains on cpu_towers. GPUs run
    cuDNN; older CPUs were not measured."""
    return (data_format == 'NHWC' and not use_gpus and _pywrap_util_port.IsMklEnabled()
            and 'avx2' in cpu_flags(cpuinfo_path))


def avx2_without_avx512(data_format, use_gpus, cpuinfo_path='/proc/cpuinfo'):
    """Whether oneDNN runs this training's NHWC convolutions on a CPU with AVX2 but no AVX-512: where its NHWC
    weight-gradient kernel is the slow one, so the wide layers' weight gradients go through NCHW
    (nets/conv_gradients.py). With AVX-512, oneDNN's NHWC kernels are the faster."""
    return (onednn_on_avx2(data_format, use_gpus, cpuinfo_path)
            and 'avx512f' not in cpu_flags(cpuinfo_path))


def cpu_towers(batch_size, cpu_count):
    """How many single-threaded clones ("towers", one per core) train a narrow network faster than one clone
    whose ops are split over every core, on an onednn_on_avx2 CPU: cpu_count when the batch splits evenly over the
    cores, else 1. Measured at depth 0.125, batch 4, on 2 cores: 1.1-1.4x with AVX2 only, 1.10-1.19x with
    AVX-512 (bench/RESULTS.md, issue 9)."""
    return cpu_count if cpu_count >= 2 and batch_size % cpu_count == 0 else 1


def session_config(gpu_memory_fraction=None, cpu_devices=1, device_filters=None, operation_timeout_secs=0,
                   bfloat16=False, single_threaded_ops=False):
    """ConfigProto: soft placement (so CPU-only kernels fall back), `cpu_devices` logical CPU devices (one per
    CPU clone), the GPU memory fraction when given, device filters for distributed workers, and, when
    operation_timeout_secs > 0, that bound on every blocking call (a cluster worker whose parameter server
    stops answering without closing its connection gets DeadlineExceededError, not a hang). bfloat16: Grappler's
    oneDNN auto mixed precision rewrite (convolutions and matmuls in bfloat16, variables and the losses' softmax
    in float32). single_threaded_ops: each op runs on one thread (cpu_towers' clones run side by side)."""
    config = tf.ConfigProto(allow_soft_placement=True, log_device_placement=False, device_count={'CPU': cpu_devices},
                            intra_op_parallelism_threads=1 if single_threaded_ops else 0)
    if bfloat16:
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = \
            rewriter_config_pb2.RewriterConfig.ON
    if gpu_memory_fraction is not None:
        config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
    if device_filters:
        config.device_filters.extend(device_filters)
    if operation_timeout_secs:
        config.operation_timeout_in_ms = int(operation_timeout_secs * 1000)
    return config


def kernel_description(data_format, bfloat16=False, nchw_weight_gradient_layers=(), single_threaded_ops=False,
                       paired_column_layers=()):
    """One line for the start-up report: which kernels run the network, its layout, conv6's form, and bfloat16,
    the layers whose weight gradients are computed in NCHW, the layers computed on column pairs and one thread
    per op, when they are on."""
    if _pywrap_util_port.IsMklEnabled():
        library = 'oneDNN (TF_ENABLE_ONEDNN_OPTS=1)'
    else:
        library = f'TensorFlow\'s own (oneDNN off: TF_ENABLE_ONEDNN_OPTS={os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")})'
    conv6 = ('one dilated convolution' if ssd_layers.native_dilation_available()
             else 'one 1x1 convolution per tap (these kernels take no dilation)')
    precision = ', bfloat16 convolutions and matmuls (--bfloat16)' if bfloat16 else ''
    gradients = (f', weight gradients of {len(nchw_weight_gradient_layers)} wide layers in NCHW (faster on CPUs '
                 'without AVX-512)' if nchw_weight_gradient_layers else '')
    paired = [name.rsplit('/', 1)[-1] for name in paired_column_layers]
    listed = ' and '.join(filter(None, [', '.join(paired[:-1]), paired[-1]])) if paired else ''
    pairs = f', {listed} on column pairs (8 channels half-fill an AVX-512 vector)' if paired else ''
    threads = (', one thread per op (the clones run side by side: faster for a narrow network on this CPU; '
               '--num_clones=1 for one clone on every core)' if single_threaded_ops else '')
    return (f'kernels: {library}, layout {data_format}, conv6 as {conv6}{precision}{gradients}{pairs}{threads}; '
            f'{os.cpu_count()} CPU cores')
