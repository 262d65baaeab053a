"""Where a training step's time goes: a trace of the real step, op by op.

    python -m bench.profile_training --batch_size=8 --max_number_of_steps=6 [any train_ssd_network.py flag]

Runs train_ssd_network.py's own main (the same graph: input pipeline, clones, loss, optimizer update)
and traces one training step (--trace_step, after warm-up) with TensorFlow's FULL_TRACE step stats.
Prints the step's wall time, the time of each op type (oneDNN kernels show as _Mkl*, everything else
runs TensorFlow's own kernels), the time waiting for the input pipeline (IteratorGetNext), and per
convolution layer: forward, input-gradient and weight-gradient time and GFLOP/s (2 FLOPs per
multiply-add from the graph's static shapes: what each kernel executes, so a layer on column pairs counts
4/3 of the direct convolution's work, nets/column_pairs.py). Op times overlap when ops run in parallel
(TensorFlow runs independent ops, e.g. a layer's input and weight gradients, at the same time on the shared
cores), so a single op's GFLOP/s understates what the cores deliver; the step's own figure is all its
convolution FLOPs over its wall time. Shares are of the summed op time. --trace_json also writes the trace for
chrome://tracing.
"""
import collections
import re

from absl import flags

from utils import host
if __name__ == '__main__':
    host.restart_with_huge_page_malloc()  # as train_ssd_network.py runs, before TensorFlow loads
import train_ssd_network  # noqa: E402
from utils import script_setup  # noqa: E402

flags.DEFINE_integer('trace_step', 4, 'Which training step (1-based call of the train op) to trace.')
flags.DEFINE_string('trace_json', None, 'Also write the traced step as a Chrome trace to this file.')
FLAGS = flags.FLAGS

_CONV_KINDS = {'Conv2D': 'forward', 'Conv2DBackpropInput': 'input grad', 'Conv2DBackpropFilter': 'weight grad'}


class StepTracer:
    """Wraps tf.Session.run: the `trace_step`-th run that fetches the train op gets FULL_TRACE."""

    def __init__(self, tf, trace_step):
        self.tf, self.trace_step, self.train_runs = tf, trace_step, 0
        self.run_metadata, self.graph, self.wall_s = None, None, None
        self._original_run = tf.Session.run

    def install(self):
        tracer = self

        def run(session, fetches, feed_dict=None, options=None, run_metadata=None):
            names = {getattr(f, 'name', '') for f in tracer.tf.nest.flatten(fetches)}
            if any('train_op' in name for name in names):
                tracer.train_runs += 1
                if tracer.train_runs == tracer.trace_step:
                    return tracer._traced(session, fetches, feed_dict)
            return tracer._original_run(session, fetches, feed_dict, options, run_metadata)
        self.tf.Session.run = run

    def _traced(self, session, fetches, feed_dict):
        import time
        self.run_metadata = self.tf.RunMetadata()
        options = self.tf.RunOptions(trace_level=self.tf.RunOptions.FULL_TRACE)
        start = time.perf_counter()
        result = self._original_run(session, fetches, feed_dict, options, self.run_metadata)
        self.wall_s, self.graph = time.perf_counter() - start, session.graph
        return result


def node_times(run_metadata):
    """[(node name, op type as run, seconds)] of the traced step."""
    rows = []
    for device in run_metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op_type = label.split(' = ')[1].split('(')[0] if ' = ' in label else node.node_name
            rows.append((node.node_name, op_type, node.all_end_rel_micros / 1e6))
    return rows


def _conv_of(graph, name):
    """The Conv2D-family op a traced node computes (oneDNN names a fused conv after its last op, e.g. Relu)."""
    try:
        op = graph.get_operation_by_name(name)
    except KeyError:
        return None
    for _ in range(3):   # Relu <- BiasAdd <- Conv2D
        if op.type in _CONV_KINDS:
            return op
        if not op.inputs:
            return None
        op = op.inputs[0].op
    return None


def conv_flops(op):
    """2 * multiply-adds of a Conv2D / its gradients (same count for all three)."""
    if op.type == 'Conv2D':
        kernel, output = op.inputs[1].shape.as_list(), op.outputs[0].shape.as_list()
    elif op.type == 'Conv2DBackpropInput':
        kernel, output = op.inputs[1].shape.as_list(), op.inputs[2].shape.as_list()
    else:
        kernel, output = op.outputs[0].shape.as_list(), op.inputs[2].shape.as_list()
    kh, kw, channels_in, _ = kernel
    count = kh * kw * channels_in
    for dim in output:
        count *= dim
    return 2 * count


def layer_name(op_name):
    match = re.search(r'ssd_\d+_vgg/(.+?)/(Conv2D|convolution)', op_name)
    return match.group(1) if match else op_name


def print_breakdown(tracer):
    rows = node_times(tracer.run_metadata)
    total = sum(seconds for _, _, seconds in rows)
    print(f'\nTraced training step {tracer.trace_step}: wall {tracer.wall_s:.3f} s, summed op time {total:.3f} s')
    by_type = collections.Counter()
    for _, op_type, seconds in rows:
        by_type[op_type] += seconds
    print('\n| op type (as run) | s | share of op time |\n|---|---|---|')
    for op_type, seconds in by_type.most_common(20):
        print(f'| {op_type} | {seconds:.3f} | {seconds / total:.1%} |')
    waiting = sum(s for name, op_type, s in rows if op_type.startswith('IteratorGetNext'))
    print(f'\nwaiting for the input pipeline (IteratorGetNext): {waiting:.3f} s')
    layers = collections.defaultdict(dict)
    for name, op_type, seconds in rows:
        # Only convolution kernels: a ReluGrad or AddV2 node would otherwise be traced back to a conv and add
        # that conv's FLOPs a second time.
        conv = _conv_of(tracer.graph, name) if 'Conv2D' in op_type else None
        if conv is not None:
            kind = _CONV_KINDS[conv.type]
            entry = layers[layer_name(conv.name)].setdefault(kind, [0.0, 0, set()])
            entry[0] += seconds
            entry[1] += conv_flops(conv)   # summed over the clones
            entry[2].add(op_type)
    step_flop = sum(entry[1] for kinds in layers.values() for entry in kinds.values())
    print(f'\nconvolutions: {step_flop / 1e9:.1f} GFLOP in the step, {step_flop / tracer.wall_s / 1e9:.1f} GFLOP/s '
          f'over its wall time')
    print('\n| conv layer | forward s | GFLOP/s | input grad s | GFLOP/s | weight grad s | GFLOP/s | kernels |')
    print('|---|---|---|---|---|---|---|---|')
    for layer, kinds in sorted(layers.items(), key=lambda item: -sum(v[0] for v in item[1].values())):
        cells, kernels = [], set()
        for kind in ('forward', 'input grad', 'weight grad'):
            seconds, flop, op_types = kinds.get(kind, (0.0, 0, set()))
            cells.append(f'{seconds:.3f} | {flop / seconds / 1e9:.0f}' if seconds else '- | -')
            kernels |= op_types
        shown = 'oneDNN' if all(k.startswith('_Mkl') for k in kernels) else ', '.join(sorted(kernels))
        print(f'| {layer} | ' + ' | '.join(cells) + f' | {shown} |')


def main(flag_values):
    tf = train_ssd_network.tf
    tracer = StepTracer(tf, FLAGS.trace_step)
    tracer.install()
    status = train_ssd_network.main(flag_values)
    if tracer.run_metadata is None:
        print(f'step {FLAGS.trace_step} was not reached; raise --max_number_of_steps')
        return status or 1
    print_breakdown(tracer)
    if FLAGS.trace_json:
        from tensorflow.python.client import timeline
        with open(FLAGS.trace_json, 'w') as trace_file:
            trace_file.write(timeline.Timeline(tracer.run_metadata.step_stats).generate_chrome_trace_format())
    return status


if __name__ == '__main__':
    train_ssd_network.define_flags()
    script_setup.run_main(main, FLAGS)
