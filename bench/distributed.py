"""Training throughput on a loopback cluster: one process vs 1 ps + 1 worker vs 1 ps + 2 workers.

    python -m bench.distributed [--batch_size 8] [--depth_multiplier 0.25] [--steps 30]

Every worker trains with the same per-worker batch on a small demo dataset (made in a temp folder). A
worker's throughput is measured from its own log: steps x batch / the sum of their logged sec/step, the
first `--warmup` steps left out; the cluster's is the sum over its workers. On this
2-core machine the workers share the cores, so the figure shows the runtime's overhead and correctness,
not a speed-up.
"""
import os
import re
import subprocess
import sys
import tempfile

from absl import app, flags

from tests.train_fixtures import ROOT, Cluster, make_tiny_dataset

flags.DEFINE_integer('batch_size', 8, 'Images per step on each worker.')
flags.DEFINE_float('depth_multiplier', 0.25, 'Channel multiplier of the network.')
flags.DEFINE_integer('steps', 30, 'Global steps per configuration.')
flags.DEFINE_integer('warmup', 3, 'First steps of each worker left out of the timing.')
FLAGS = flags.FLAGS

STEP_SECONDS = re.compile(r'^\d\d:\d\d:\d\d step \d+: loss .* ([\d.]+) sec/step', re.M)


def images_per_second(log, batch_size, warmup):
    """A worker's images/s from the sec/step of its step lines after the first `warmup` (one line a step:
    --log_every_n_steps=1); RuntimeError when it logged no more than those (its steps went to the others)."""
    logged = [float(s) for s in STEP_SECONDS.findall(log)]
    if len(logged) <= warmup:
        raise RuntimeError(f'a worker logged {len(logged)} step(s), none after --warmup={warmup}: give more --steps')
    return (len(logged) - warmup) * batch_size / sum(logged[warmup:])


def size_args():
    """The flags this bench varies (later flags win over the test cluster's small defaults)."""
    return [f'--batch_size={FLAGS.batch_size}', f'--depth_multiplier={FLAGS.depth_multiplier}',
            f'--max_number_of_steps={FLAGS.steps}', '--save_interval_secs=0']


def one_process(records, workdir):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train_ssd_network.py'), f'--dataset_dir={records}',
                             f'--train_dir={os.path.join(workdir, "single")}', f'--pretrained_path={workdir}',
                             '--log_every_n_steps=1', '--num_readers=1', '--num_preprocessing_threads=2']
                            + size_args(), capture_output=True, text=True, check=True)
    return [images_per_second(result.stderr, FLAGS.batch_size, FLAGS.warmup)]


def cluster(records, workdir, num_workers, *extra):
    train_dir = os.path.join(workdir, f'cluster{num_workers}{"sync" if extra else ""}')
    run = Cluster(workdir, records, train_dir, num_workers, *size_args(), *extra)
    try:
        run.start('ps')
        for task in range(num_workers):
            run.start('worker', task)
        for task in range(num_workers):
            run.finish(f'worker{task}', timeout=600)
        return [images_per_second(run.log(f'worker{task}'), FLAGS.batch_size, FLAGS.warmup)
                for task in range(num_workers)]
    finally:
        run.stop_all()


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as workdir:
        records = make_tiny_dataset(workdir, num_train=32, num_test=4)
        rows = [('one process (no cluster)', one_process(records, workdir)),
                ('1 ps + 1 worker', cluster(records, workdir, 1)),
                ('1 ps + 2 workers, async', cluster(records, workdir, 2)),
                ('1 ps + 2 workers, sync', cluster(records, workdir, 2, '--sync_replicas'))]
    print(f'batch {FLAGS.batch_size} per worker, depth multiplier {FLAGS.depth_multiplier:g}, {FLAGS.steps} '
          f'global steps, {os.cpu_count()} CPU cores')
    print(f'{"configuration":28s} {"images/s (sum)":>15s}  per worker')
    for label, rates in rows:
        print(f'{label:28s} {sum(rates):15.1f}  {", ".join(f"{r:.1f}" for r in rates)}')


if __name__ == '__main__':
    app.run(main)
