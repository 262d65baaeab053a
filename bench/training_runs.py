"""Running train_ssd_network.py and other measuring children as the benchmarks time them."""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEP_LINE = re.compile(r'step (\d+):.*?([\d.]+) sec/step')
TRIMMED_FRACTION = 0.1   # of the step times dropped at each end before averaging (slow outliers, GC pauses)


def trimmed_mean(values, fraction=TRIMMED_FRACTION):
    """Mean of the values left after dropping the `fraction` smallest and largest. The log prints sec/step to
    the millisecond, about 1% of a step at depth 0.125, so a median of those values moves in steps of 1%; the
    steps' own jitter (several ms) spreads the rounding, and the trimmed mean resolves far finer."""
    ordered = sorted(values)
    cut = int(len(ordered) * fraction)
    kept = ordered[cut:len(ordered) - cut]
    return sum(kept) / len(kept)


def run_child(args, python=sys.executable, cwd=ROOT):
    """Runs a measuring child; returns (its 'RESULT {json}' line as a dict, peak RSS in GiB, output)."""
    process = subprocess.Popen([python] + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=dict(os.environ, PYTHONPATH=cwd))
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    rss_gib = usage.ru_maxrss / 2 ** 20   # ru_maxrss is in KiB on Linux
    results = [json.loads(line[7:]) for line in output.splitlines() if line.startswith('RESULT ')]
    if os.waitstatus_to_exitcode(status) != 0 and not results:
        raise RuntimeError(f'{" ".join(args[:2])} failed:\n{output[-3000:]}')
    return (results[-1] if results else {}), rss_gib, output


def time_training(repo_dir, dataset_dir, work_dir, depth_multiplier, batch_size, train_steps, warmup_steps):
    """(images/s of our real training step, peak RSS GiB, train_dir) from train_ssd_network.py's per-step
    log (the trimmed mean of the steps after warmup_steps), training from scratch into a new folder of
    work_dir."""
    train_dir = tempfile.mkdtemp(prefix='train-', dir=work_dir)
    no_checkpoint = os.path.join(work_dir, 'no_pretrained')   # an empty folder: every revision reads it as none
    os.makedirs(no_checkpoint, exist_ok=True)
    args = ['train_ssd_network.py', f'--dataset_dir={dataset_dir}', f'--train_dir={train_dir}',
            f'--pretrained_path={no_checkpoint}', f'--depth_multiplier={depth_multiplier}',
            f'--batch_size={batch_size}', f'--max_number_of_steps={train_steps}',
            '--log_every_n_steps=1', '--save_interval_secs=0', '--save_summaries_secs=0',
            '--opt_epsilon=1e-8']
    _, rss, output = run_child(args, cwd=repo_dir)
    seconds = [float(m.group(2)) for m in map(_STEP_LINE.search, output.splitlines())
               if m and int(m.group(1)) > warmup_steps]
    if not seconds:
        raise RuntimeError(f'no step times in the training log:\n{output[-3000:]}')
    return batch_size / trimmed_mean(seconds), rss, train_dir


def ensure_demo_records(work_dir):
    """The demo dataset's records in work_dir/records (generated and converted once)."""
    records = os.path.join(work_dir, 'records')
    run_child(['-c', 'import sys; from datasets import demo_dataset; '
                     'demo_dataset.ensure_demo_dataset(sys.argv[1], sys.argv[2])',
               os.path.join(work_dir, 'images'), records])
    return records
