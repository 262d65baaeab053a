"""One speed lever at a time: the SSD training step (network, loss, weight decay, Adam) with and without it.

    python -m bench.levers --lever=conv6 [--depth_multiplier=1.0 --batch_size=8 --rounds=4 --steps=1]

Every variant is built in this process and timed in alternation, round by round, so that the load on the
shared cores falls on each alike; the table gives each variant's median seconds per step.
Levers (variants in the order timed):
- conv6:   conv6 as one dilated Conv2D (native) / as one 1x1 Conv2D per tap (the portable form)
- pairs:   8-channel layers direct / on column pairs (nets/column_pairs.py); only depth 0.125 and below have
           such layers (conv1), so give --depth_multiplier=0.125
- layout:  NHWC / NCHW (oneDNN runs both on this CPU build)
- wgrad:   weight gradients by oneDNN's NHWC kernel / the wide layers' in NCHW (nets/conv_gradients.py)
- xla:     no XLA / XLA auto-clustering (global_jit_level ON_1; run with
           TF_XLA_FLAGS=--tf_xla_cpu_global_jit so that it applies on the CPU)
- bf16:    float32 / Grappler's auto_mixed_precision_onednn_bfloat16 rewrite (convolutions and matmuls in
           bfloat16 where the CPU has AVX512_BF16 or AMX; numerics change, so this is a probe, not a default)
Inputs are random images and labels (1% positives); the step is the gradients of the SSD loss plus weight
decay applied by Adam.
"""
import os
import statistics
import time

from absl import app, flags

from utils import script_setup

flags.DEFINE_enum('lever', 'conv6', ['conv6', 'pairs', 'layout', 'wgrad', 'xla', 'bf16'], 'Which lever to time.')
flags.DEFINE_float('depth_multiplier', 1.0, 'Network width.')
flags.DEFINE_integer('batch_size', 8, 'Images per step.')
flags.DEFINE_integer('rounds', 4, 'Alternated rounds (the table shows medians).')
flags.DEFINE_integer('steps', 1, 'Steps per variant and round.')
FLAGS = flags.FLAGS

NUM_CLASSES = 21


def variants(lever):
    """[(name, build options, session options)] of a lever."""
    if lever == 'conv6':
        return [('conv6 native', {'native_dilation': True}, {}),
                ('conv6 by taps', {'native_dilation': False}, {})]
    if lever == 'pairs':
        return [('direct', {'paired_columns': False}, {}), ('column pairs', {'paired_columns': True}, {})]
    if lever == 'layout':
        return [('NHWC', {'data_format': 'NHWC'}, {}), ('NCHW', {'data_format': 'NCHW'}, {})]
    if lever == 'wgrad':
        return [('NHWC weight gradients', {}, {}), ('wide layers\' weight gradients in NCHW', {'wgrad_nchw': True}, {})]
    if lever == 'bf16':
        return [('float32', {}, {}), ('oneDNN bfloat16 rewrite', {}, {'bf16': True})]
    if '--tf_xla_cpu_global_jit' not in os.environ.get('TF_XLA_FLAGS', ''):   # ON_1 alone leaves the CPU out
        raise app.UsageError('--lever=xla: run with TF_XLA_FLAGS=--tf_xla_cpu_global_jit, else XLA does not '
                             'cluster CPU ops and both rows time the same graph')
    return [('no XLA', {}, {}), ('XLA ON_1', {}, {'jit': True})]


def training_session(tf, build_options, session_options):
    """(session, train op) of one SSD training step on constant random inputs."""
    import numpy as np
    import tf_slim as slim
    from nets import conv_gradients, nets_factory
    rng = np.random.RandomState(0)
    batch, depth = FLAGS.batch_size, FLAGS.depth_multiplier
    data_format = build_options.get('data_format', 'NHWC')
    graph = tf.Graph()
    with graph.as_default():
        net = nets_factory.get_network('ssd_300_vgg', NUM_CLASSES, depth)
        images = tf.constant(rng.normal(0, 50, [batch, 300, 300, 3]).astype(np.float32))
        with slim.arg_scope(net.arg_scope(data_format=data_format)), \
                conv_gradients.override(build_options.get('wgrad_nchw', False)):
            logits, localisations, _ = net.build(images, data_format=data_format,
                                                 native_dilation=build_options.get('native_dilation'),
                                                 paired_columns=build_options.get('paired_columns'))
        num_anchors = len(net.anchors)
        labels = rng.randint(1, NUM_CLASSES, [batch, num_anchors]) * (rng.rand(batch, num_anchors) < 0.01)
        losses = net.losses(logits, localisations, tf.constant(labels), tf.zeros_like(localisations))
        total = losses['total'] + tf.add_n(tf.losses.get_regularization_losses())
        train_op = tf.train.AdamOptimizer(1e-4).minimize(total, global_step=tf.train.get_or_create_global_step())
        config = tf.ConfigProto()
        if session_options.get('jit'):
            config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
        if session_options.get('bf16'):
            from tensorflow.core.protobuf import rewriter_config_pb2
            config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = \
                rewriter_config_pb2.RewriterConfig.ON
        session = tf.Session(graph=graph, config=config)
        session.run(tf.global_variables_initializer())
        session.run(train_op)   # warm-up: kernels, primitives, XLA compilation
    return session, train_op


def main(_):
    import tensorflow.compat.v1 as tf
    timed = [(name, *training_session(tf, build, session)) for name, build, session in variants(FLAGS.lever)]
    seconds = {name: [] for name, _, _ in timed}
    for _ in range(FLAGS.rounds):
        for name, session, train_op in timed:
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                session.run(train_op)
            seconds[name].append((time.perf_counter() - start) / FLAGS.steps)
    first = statistics.median(seconds[timed[0][0]])
    print(f'lever {FLAGS.lever}: SSD300 depth {FLAGS.depth_multiplier:g}, batch {FLAGS.batch_size}, '
          f'{FLAGS.rounds} alternated rounds of {FLAGS.steps} step(s)')
    print('| variant | median s / step | images/s | speed vs first | rounds (s / step) |\n|---|---|---|---|---|')
    for name, _, _ in timed:
        median = statistics.median(seconds[name])
        print(f'| {name} | {median:.3f} | {FLAGS.batch_size / median:.2f} | {first / median:.2f} | '
              + ' '.join(f'{s:.3f}' for s in seconds[name]) + ' |')


if __name__ == '__main__':
    script_setup.run_main(main, FLAGS)
