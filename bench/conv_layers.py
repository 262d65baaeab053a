"""Each convolution of the SSD network alone, on one thread: forward, input gradient and weight gradient,
under oneDNN's default instruction set and under a capped one, side by side.

    python -m bench.conv_layers [--depth_multiplier=0.125 --batch_size=2 --compare_isa=AVX2 --rounds=3 --paired_columns]

Why one thread: a narrow network trains as one single-threaded clone per core (utils/devices.cpu_towers),
so a layer's single-thread time is what it costs in a step. Why two instruction sets: oneDNN picks its
kernels' vector width once per process, from the CPU or from ONEDNN_MAX_CPU_ISA, so a cap (AVX2: 8 floats a
vector instead of AVX-512's 16) applies to every layer alike. The table shows what each layer gains or loses
under the cap, and what a per-layer choice, which TensorFlow does not offer, would save ("best of both").

The layers are the real network's (nets_factory, its static NHWC shapes at --batch_size, the batch of one
clone); layers of one shape are timed once and counted as often as they occur. Each instruction set is timed
in its own process, alternated for --rounds rounds; the table shows median milliseconds per call, less the
time of an empty session.run (about 0.1 ms, not paid inside a training step's graph). conv1_1's
input gradient is left out, as training never computes the image's gradient.
"""
import json
import os
import statistics
import subprocess
import sys

from utils import script_setup  # before TensorFlow: oneDNN on, start-up notices off
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
import tf_slim as slim  # noqa: E402
from absl import flags  # noqa: E402

from bench.timing import call_seconds  # noqa: E402
from nets import nets_factory  # noqa: E402
from utils.host import cpu_flags  # noqa: E402

flags.DEFINE_enum('model_name', 'ssd_300_vgg', list(nets_factory.MODEL_NAMES), 'Network whose layers to time.')
flags.DEFINE_float('depth_multiplier', 0.125, 'Network width.')
flags.DEFINE_integer('batch_size', 2, 'Images per call (one clone\'s share of the batch).')
flags.DEFINE_string('compare_isa', 'AVX2', 'ONEDNN_MAX_CPU_ISA of the second column (e.g. AVX2, AVX512_CORE).')
flags.DEFINE_integer('rounds', 3, 'Alternated rounds of the two processes.')
flags.DEFINE_integer('iterations', 9, 'Timed calls per kernel and round (after two warm-up calls).')
flags.DEFINE_bool('paired_columns', False, 'Time conv1 in the column-pair form training uses on AVX-512 '
                  '(nets/column_pairs.py) in both columns; by default every layer in its direct form.')
flags.DEFINE_bool('child', False, 'Internal: time the layers in this process and print one RESULT line.')
FLAGS = flags.FLAGS

KINDS = ('forward', 'input grad', 'weight grad')
_ATTRS = ('strides', 'padding', 'explicit_paddings', 'dilations', 'data_format')


def network_convolutions(model_name, depth_multiplier, batch_size, paired_columns):
    """{signature: [layer names]} of the network's Conv2D ops; a signature (JSON text) holds the input and
    filter shapes and the attributes that fix the kernel (strides, padding, dilations, layout)."""
    graph = tf.Graph()
    with graph.as_default():
        net = nets_factory.get_network(model_name, 21, depth_multiplier)
        size = net.default_image_size
        images = tf.placeholder(tf.float32, [batch_size, size, size, 3])
        with slim.arg_scope(net.arg_scope(data_format='NHWC')):
            net.build(images, is_training=True, data_format='NHWC', paired_columns=paired_columns)
    layers = {}
    for op in graph.get_operations():
        if op.type != 'Conv2D':
            continue
        attrs = {name: op.get_attr(name) for name in _ATTRS}
        attrs = {name: value.decode() if isinstance(value, bytes) else list(value) if isinstance(value, list)
                 else value for name, value in attrs.items()}
        signature = json.dumps({'input': op.inputs[0].shape.as_list(), 'filter': op.inputs[1].shape.as_list(),
                                'output': op.outputs[0].shape.as_list(), 'attrs': attrs}, sort_keys=True)
        layers.setdefault(signature, []).append(op.name.rsplit('/', 1)[0])
    return layers


def median_call_ms(sess, target, iterations):
    """Median ms of sess.run(target), after two warm-up calls."""
    return 1e3 * statistics.median(call_seconds(lambda: sess.run(target), iterations, warmup=2))


def time_convolution(signature, needs_input_grad, iterations):
    """[forward, input grad (None where not needed), weight grad] median ms per call, on one thread."""
    spec = json.loads(signature)
    rng = np.random.RandomState(0)
    with tf.Graph().as_default():
        # Variables, so that nothing is constant-folded; running an op as a target fetches nothing.
        x = tf.Variable(rng.rand(*spec['input']).astype(np.float32))
        w = tf.Variable(rng.rand(*spec['filter']).astype(np.float32))
        dy = tf.Variable(rng.rand(*spec['output']).astype(np.float32))
        attrs = spec['attrs']
        targets = [tf.raw_ops.Conv2D(input=x, filter=w, **attrs).op,
                   tf.raw_ops.Conv2DBackpropInput(input_sizes=spec['input'], filter=w, out_backprop=dy,
                                                  **attrs).op if needs_input_grad else None,
                   tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=spec['filter'], out_backprop=dy,
                                                   **attrs).op]
        config = tf.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            # Less the cost of a call itself (about 0.1 ms), which inside a training step's graph is not paid.
            empty_ms = median_call_ms(sess, tf.no_op(), iterations)
            return [None if t is None else max(median_call_ms(sess, t, iterations) - empty_ms, 0.)
                    for t in targets]


def child_main():
    layers = network_convolutions(FLAGS.model_name, FLAGS.depth_multiplier, FLAGS.batch_size,
                                  FLAGS.paired_columns)
    times = {signature: time_convolution(signature, not any(n.endswith('conv1_1') for n in names),
                                         FLAGS.iterations)
             for signature, names in layers.items()}
    print('RESULT ' + json.dumps(times), flush=True)


def run_child(isa):
    """{signature: [ms per kind]} from a child process with ONEDNN_MAX_CPU_ISA=isa (None: the CPU's own)."""
    env = dict(os.environ)
    env.pop('ONEDNN_MAX_CPU_ISA', None)
    if isa:
        env['ONEDNN_MAX_CPU_ISA'] = isa
    args = [sys.executable, '-m', 'bench.conv_layers', '--child', f'--model_name={FLAGS.model_name}',
            f'--depth_multiplier={FLAGS.depth_multiplier}', f'--batch_size={FLAGS.batch_size}',
            f'--iterations={FLAGS.iterations}', f'--paired_columns={FLAGS.paired_columns}']
    done = subprocess.run(args, env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f'the child with ONEDNN_MAX_CPU_ISA={isa} failed:\n{done.stderr[-3000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def medians(samples):
    """{signature: [median ms per kind]} over the rounds' samples."""
    return {signature: [None if samples[0][signature][k] is None
                        else statistics.median(s[signature][k] for s in samples) for k in range(len(KINDS))]
            for signature in samples[0]}


def default_isa_name():
    """What oneDNN runs without the cap: ONEDNN_MAX_CPU_ISA where set, else the CPU's widest vectors."""
    flags_here = cpu_flags()
    return os.environ.get('ONEDNN_MAX_CPU_ISA') or (
        'AVX-512' if 'avx512f' in flags_here else 'AVX2' if 'avx2' in flags_here else 'the CPU\'s')


def print_table(layers, default_ms, capped_ms):
    default, isa = default_isa_name(), f'ONEDNN_MAX_CPU_ISA={FLAGS.compare_isa}'
    print(f'{FLAGS.model_name} depth {FLAGS.depth_multiplier:g}, batch {FLAGS.batch_size}, one thread, NHWC; '
          f'median ms per call of {FLAGS.rounds} alternated rounds x {FLAGS.iterations} calls')
    print(f'| layer (shape, x count) | output | GFLOP per call | {default}: forward / input / weight ms | '
          f'{isa}: forward / input / weight ms |')
    print('|---|---|---|---|---|')
    totals = {default: 0., isa: 0., 'best of both': 0.}
    for signature, names in layers.items():
        spec = json.loads(signature)
        kernel_h, kernel_w, channels_in, _ = spec['filter']
        gflop = 2e-9 * np.prod(spec['output']) * kernel_h * kernel_w * channels_in
        cells = []
        for times in (default_ms[signature], capped_ms[signature]):
            cells.append(' / '.join('-' if t is None else f'{t:.2f}' for t in times))
        for k in range(len(KINDS)):
            if default_ms[signature][k] is None:
                continue
            pair = (default_ms[signature][k], capped_ms[signature][k])
            totals[default] += len(names) * pair[0]
            totals[isa] += len(names) * pair[1]
            totals['best of both'] += len(names) * min(pair)
        count = f' x{len(names)}' if len(names) > 1 else ''
        print(f'| {names[0]}{count} | {"x".join(map(str, spec["output"][1:]))} | {gflop:.3f} | {cells[0]} | '
              f'{cells[1]} |')
    print()
    print(f'| all convolutions of one clone\'s step (forward + gradients) | ms | x {default} |')
    print('|---|---|---|')
    for name, total in totals.items():
        print(f'| {name} | {total:.1f} | {total / totals[default]:.3f} |')


def main(_flags):
    if FLAGS.child:
        child_main()
        return
    layers = network_convolutions(FLAGS.model_name, FLAGS.depth_multiplier, FLAGS.batch_size,
                                  FLAGS.paired_columns)
    default_samples, capped_samples = [], []
    for _ in range(FLAGS.rounds):
        default_samples.append(run_child(os.environ.get('ONEDNN_MAX_CPU_ISA')))
        capped_samples.append(run_child(FLAGS.compare_isa))
    print_table(layers, medians(default_samples), medians(capped_samples))


if __name__ == '__main__':
    script_setup.run_main(main, FLAGS)
