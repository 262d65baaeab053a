"""Synchronous replicas on a loopback cluster (1 ps + 2 workers): the global step advances once per
replicas_to_aggregate gradients, the restarted cluster resumes from the chief's checkpoint, and a
parameter server that dies, or stops answering, stops the workers with one clear line within a bounded time."""
import re
import signal
import time

import pytest
import tensorflow.compat.v1 as tf

from tests.train_fixtures import Cluster, make_tiny_dataset

RAN = r'Training stops at global step (\d+); this process ran (\d+) step\(s\)'


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    return make_tiny_dataset(str(tmp_path_factory.mktemp('data')))


def run_sync_cluster(tmp_path, records, train_dir, max_steps):
    """ps + 2 sync workers until max_steps; returns (chief log, [steps each worker ran])."""
    cluster = Cluster(tmp_path, records, train_dir, 2, '--sync_replicas', f'--max_number_of_steps={max_steps}')
    try:
        cluster.start('ps')
        cluster.start('worker', 0)
        cluster.start('worker', 1)
        assert cluster.finish('worker0', timeout=240) == 0, cluster.log('worker0')[-3000:]
        assert cluster.finish('worker1', timeout=60) == 0, cluster.log('worker1')[-3000:]
        ran = [int(re.search(RAN, cluster.log(name)).group(2)) for name in ('worker0', 'worker1')]
        return cluster.log('worker0'), ran
    finally:
        cluster.stop_all()


def test_sync_steps_aggregate_both_workers_and_a_restarted_cluster_resumes(records, tmp_path):
    train_dir = tmp_path / 'train'
    chief_log, ran = run_sync_cluster(tmp_path, records, train_dir, 4)
    assert 'Starting from scratch' in chief_log
    latest = tf.train.latest_checkpoint(str(train_dir))
    assert latest.endswith('model.ckpt-4') and tf.train.load_variable(latest, 'global_step') == 4
    # Each global step applied the mean of 2 gradients; at most one more per worker was left pending.
    assert 2 * 4 <= sum(ran) <= 2 * 4 + 2, ran
    chief_log, ran = run_sync_cluster(tmp_path, records, train_dir, 6)
    assert re.search(r'Resuming from .*model.ckpt-4 at step 4', chief_log)
    latest = tf.train.latest_checkpoint(str(train_dir))
    assert latest.endswith('model.ckpt-6') and tf.train.load_variable(latest, 'global_step') == 6
    assert 2 * 2 <= sum(ran) <= 2 * 2 + 2, ran


def test_lost_parameter_server_is_a_clear_error_within_a_bounded_time(records, tmp_path):
    cluster = Cluster(tmp_path, records, tmp_path / 'train', 1)
    try:
        cluster.start('ps')
        cluster.start('worker', 0)
        cluster.wait_for('worker0', r'\d\d:\d\d:\d\d step 2: loss ')
        cluster.processes['ps0'][0].kill()
        killed = time.time()
        assert cluster.finish('worker0', timeout=90) == 1
        assert time.time() - killed < 60
        last_line = cluster.log('worker0').strip().splitlines()[-1]
        assert re.fullmatch(r'train_ssd_network.py: error: lost contact with the cluster \(/job:ps/replica:0/task:0: '
                            r'.+\); a parameter server may be gone: restart the cluster and the chief resumes from '
                            r'its last checkpoint', last_line), last_line
    finally:
        cluster.stop_all()


def test_silent_parameter_server_is_a_clear_error_after_cluster_wait_secs(records, tmp_path):
    """A ps that stops answering but keeps its connections open (SIGSTOP: a hung or partitioned host)
    would block a worker's step for ever; the session's operation timeout (--cluster_wait_secs) ends it."""
    cluster = Cluster(tmp_path, records, tmp_path / 'train', 1, '--cluster_wait_secs=30')
    try:
        cluster.start('ps')
        cluster.start('worker', 0)
        cluster.wait_for('worker0', r'\d\d:\d\d:\d\d step 2: loss ')
        cluster.processes['ps0'][0].send_signal(signal.SIGSTOP)
        stopped = time.time()
        assert cluster.finish('worker0', timeout=120) == 1
        assert time.time() - stopped < 90   # 30 s operation timeout + 10 s to abandon the session
        last_line = cluster.log('worker0').strip().splitlines()[-1]
        assert re.fullmatch(r'train_ssd_network.py: error: lost contact with the cluster \(.+\); a parameter server '
                            r'may be gone: restart the cluster and the chief resumes from its last checkpoint',
                            last_line), last_line
    finally:
        cluster.processes['ps0'][0].send_signal(signal.SIGCONT)
        cluster.stop_all()
