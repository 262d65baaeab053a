"""Training on TensorFlow's distributed runtime: cluster flags, device placement, and a loopback cluster
(1 ps + 2 async workers) where a killed worker rejoins, Ctrl-C on the chief saves a checkpoint and stops
the cluster, and that checkpoint resumes in a single process."""
import re
import signal
import socket
import subprocess
import types

import pytest
import tensorflow.compat.v1 as tf

from tests.train_fixtures import SMALL, Cluster, make_tiny_dataset, parse_flags, plan_from_flags
from utils import distributed
from utils.errors import UserError

STEP = r'\d\d:\d\d:\d\d step (\d+): loss '


def test_parse_hosts():
    assert distributed.parse_hosts(' a:1, b.example:2222 ,', 'ps_hosts') == ['a:1', 'b.example:2222']
    for bad, problem in (('a', 'not host:port'), ('a:x', 'not host:port'), ('a:1,a:1', 'twice')):
        with pytest.raises(UserError, match=f'--ps_hosts: .*{problem}'):
            distributed.parse_hosts(bad, 'ps_hosts')


@pytest.mark.parametrize('args, message', [
    (([], ['w:1'], 'worker', 0, False, None), 'needs both --ps_hosts and --worker_hosts'),
    ((['p:1'], ['w:1'], 'chief', 0, False, None), '--job_name=chief: use ps or worker'),
    ((['p:1'], ['w:1', 'w:2'], 'worker', 2, False, None), '--task=2: the worker job has tasks 0..1'),
    ((['p:1'], ['w:1'], 'worker', 0, False, 2), '--replicas_to_aggregate needs --sync_replicas'),
    ((['p:1'], ['p:1'], 'worker', 0, False, None), 'share p:1'),
    (([], [], 'worker', 0, False, None), '--job_name / --sync_replicas need --ps_hosts'),
])
def test_cluster_settings_errors(args, message):
    with pytest.raises(UserError, match=message):
        distributed.check_cluster_settings(*args)


def test_cluster_settings_accept_single_process_and_clusters():
    assert distributed.check_cluster_settings([], [], None, 0, False, None) is False
    assert distributed.check_cluster_settings(['p:1'], ['w:1', 'w:2'], 'worker', 1, True, 2) is True


def test_worker_deployment_places_variables_on_ps_and_ops_on_the_worker():
    deployment = distributed.worker_deployment(types.SimpleNamespace(target='grpc://w:2'), ['p:1', 'p:2'],
                                               ['w:1', 'w:2'], 1, num_clones=2, use_gpus=False)
    assert not deployment.is_chief and deployment.device_filters == ['/job:ps', '/job:worker/task:1']
    assert deployment.clone_devices == ['/job:worker/task:1/device:CPU:0', '/job:worker/task:1/device:CPU:1']
    with tf.Graph().as_default():
        with tf.device(deployment.device_fns[1]):
            first, second = tf.Variable(1.0), tf.Variable(2.0)
            product = first * second
    assert {first.device, second.device} == {'/job:ps/task:0', '/job:ps/task:1'}   # round-robin
    assert product.device == '/job:worker/task:1/device:CPU:1'


def test_wait_for_hosts():
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    open_port = listener.getsockname()[1]
    distributed.wait_for_hosts([f'127.0.0.1:{open_port}'], 5, 'parameter server')
    listener.close()
    heard = []
    with pytest.raises(UserError, match=rf'parameter server 127.0.0.1:{open_port} does not answer after 0.5 s'):
        distributed.wait_for_hosts([f'127.0.0.1:{open_port}'], 0.5, 'parameter server', poll_secs=0.1,
                                   log_fn=heard.append)
    # Said once, not at every poll.
    assert heard == [f'waiting for parameter server 127.0.0.1:{open_port} to answer (up to 0.5 s, --cluster_wait_secs)']


@pytest.mark.parametrize('text', [   # two shapes of the error TensorFlow raises when a ps dies mid-step
    'Graph execution error:\n\nFrom /job:ps/replica:0/task:0:\nSocket closed\nAdditional GRPC error information '
    'from remote target /job:ps/replica:0/task:0 while calling /tensorflow.WorkerService/RunGraph:',
    'Graph execution error:\n\n=====================\nUNAVAILABLE: From /job:worker/replica:0/task:0:\nSocket '
    'closed\nAdditional GRPC error information from remote target /job:ps/replica:0/task:0 while calling '
    '/tensorflow.WorkerService/RecvTensor:',
])
def test_describe_cluster_error(text):
    error = tf.errors.UnavailableError(None, None, text)
    assert distributed.describe_cluster_error(error) == '/job:ps/replica:0/task:0: Socket closed'
    assert distributed.describe_cluster_error(ValueError('plain\nmore')) == 'plain'


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    return make_tiny_dataset(str(tmp_path_factory.mktemp('data')))


def test_non_chief_needs_no_checkpoint_and_sync_steps_count_aggregated_batches(records, tmp_path):
    args = [f'--dataset_dir={records}', f'--train_dir={tmp_path}', '--pretrained_path=/not/on/this/host',
            '--ps_hosts=p:1', '--worker_hosts=w:1,w:2', '--job_name=worker'] + SMALL
    plan = plan_from_flags(parse_flags(args + ['--task=1', '--sync_replicas']))
    assert plan.restore.pretrained is None and plan.config.cluster.replicas_per_step() == 2 and plan.deployment is None
    assert plan.decay_steps == 2          # int(8 samples / (2 x 4 images) x 2 epochs)
    with pytest.raises(UserError, match='--pretrained_path=/not/on/this/host: no such checkpoint'):
        plan_from_flags(parse_flags(args + ['--task=0']))


def test_async_cluster_worker_restart_chief_interrupt_and_single_process_resume(records, tmp_path):
    train_dir = tmp_path / 'train'
    cluster = Cluster(tmp_path, records, train_dir, 2)
    try:
        cluster.start('ps')
        cluster.start('worker', 0)
        cluster.start('worker', 1)
        cluster.wait_for('worker0', STEP)
        cluster.wait_for('worker1', STEP)
        cluster.processes['worker1'][0].kill()                 # kill -9 a non-chief worker ...
        cluster.finish('worker1')
        cluster.start('worker', 1)                             # ... and start it again: it rejoins
        rejoined = int(cluster.wait_for('worker1', STEP).group(1))
        cluster.wait_for('worker1', rf'\d\d:\d\d:\d\d step (?!{rejoined}:)\d+: loss ')
        assert 'from the chief (worker 0), through the parameter servers' in cluster.log('worker1')
        cluster.processes['worker0'][0].send_signal(signal.SIGINT)   # Ctrl-C on the chief
        assert cluster.finish('worker0') == 0
        assert cluster.finish('worker1') == 0                  # stopped by the chief's cluster stop flag
        chief_log = cluster.log('worker0')
        said, reached = map(int, re.search(r'Stopped by SIGINT at step (\d+), checkpoint .*model.ckpt-(\d+);',
                                           chief_log).groups())
        assert said == reached > rejoined         # the checkpoint's step, though worker 1 stepped after the chief
        assert 'Training stops at global step' in cluster.log('worker1')
        assert re.search(r'Stopped with the chief \(worker 0\) at global step \d+\. This process ran ',
                         cluster.log('worker1'))
    finally:
        cluster.stop_all()
    latest = tf.train.latest_checkpoint(str(train_dir))
    assert latest.endswith(f'model.ckpt-{reached}')
    # Async workers may finish a step while the chief saves: the content can be a step or two ahead.
    saved_step = int(tf.train.load_variable(latest, 'global_step'))
    assert reached <= saved_step <= reached + 2
    assert len([p for p in train_dir.iterdir() if p.name.startswith('events.')]) == 1   # only the chief writes
    single = [arg for arg in cluster.common if not arg.startswith(('--ps_hosts', '--worker_hosts', '--cluster'))]
    result = subprocess.run(single + [f'--max_number_of_steps={saved_step + 1}'], capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf'Resuming from .*model.ckpt-{reached} at step {saved_step}', result.stderr)
    assert tf.train.latest_checkpoint(str(train_dir)).endswith(f'model.ckpt-{saved_step + 1}')


def test_wait_for_hosts_accepts_a_bracketed_ipv6_address():
    listener = socket.socket(socket.AF_INET6)
    listener.bind(('::1', 0))
    listener.listen()
    try:
        distributed.wait_for_hosts([f'[::1]:{listener.getsockname()[1]}'], 0.5, 'parameter server', poll_secs=0.1)
    finally:
        listener.close()


def test_a_worker_restarted_after_the_chief_stopped_still_sees_the_stop():
    """Each worker's local init runs ClusterStop.init_op; a restarted non-chief must not clear the chief's flag."""
    server = tf.train.Server.create_local_server()
    with tf.Graph().as_default():
        stop = distributed.ClusterStop(num_workers=2)
        chief_init = tf.group(tf.local_variables_initializer(), stop.init_op(is_chief=True))
        worker_init = tf.group(tf.local_variables_initializer(), stop.init_op(is_chief=False))
        with tf.Session(server.target) as chief:
            chief.run(chief_init)
            chief.run(worker_init)                    # worker 1 starts: the flag stays clear
            assert not stop.requested(chief)
            stop.announce(chief)                      # the chief stops training
        with tf.Session(server.target) as restarted_worker:
            restarted_worker.run(worker_init)
            assert stop.requested(restarted_worker)
        with tf.Session(server.target) as new_chief:  # a new run clears it
            new_chief.run(chief_init)
            assert not stop.requested(new_chief)


def test_chief_unblock_op_feeds_the_sync_optimizers_own_accumulators():
    """Pins SyncReplicasOptimizer's accumulator naming ('<variable>/grad_accum' on the variable's device), which
    ClusterStop relies on instead of the optimizer's private _accumulator_list. Checked on TensorFlow 2.21."""
    with tf.Graph().as_default() as graph:
        global_step = tf.train.get_or_create_global_step()
        weights = [tf.Variable(tf.zeros([3, 2]), name='w'), tf.Variable(tf.zeros([2]), name='b')]
        loss = tf.add_n([tf.reduce_sum(tf.square(w - 1.0)) for w in weights])
        optimizer = tf.train.SyncReplicasOptimizer(tf.train.GradientDescentOptimizer(0.1), replicas_to_aggregate=2,
                                                   total_num_replicas=2)
        optimizer.apply_gradients(optimizer.compute_gradients(loss), global_step=global_step)

        def accumulators():
            return {op.name: op.get_attr('shared_name') for op in graph.get_operations()
                    if op.type == 'ResourceConditionalAccumulator'}
        created_by_optimizer = set(accumulators().values())
        before = set(accumulators())
        distributed.ClusterStop(2, optimizer, 2, weights)
        fed = {name: shared for name, shared in accumulators().items() if name not in before}
        feeds = [op for op in graph.get_operations() if op.type == 'ResourceAccumulatorApplyGradient'
                 and op.inputs[0].op.name in fed]
    assert tf.__version__.startswith('2.21'), f're-check the accumulator naming on TensorFlow {tf.__version__}'
    assert created_by_optimizer == {b'w:0/grad_accum', b'b:0/grad_accum'}
    assert set(fed.values()) == created_by_optimizer and len(feeds) == 2 * 2   # replicas x variables


@pytest.mark.parametrize('error, reported', [(tf.errors.UnavailableError(None, None, 'ps0 gone'), True),
                                             (tf.errors.NotFoundError(None, None, 'no such folder'), False)])
def test_chief_saver_reports_a_lost_task_that_the_final_save_meets(monkeypatch, error, reported):
    """When the supervisor's step counter thread meets a dead ps first, the loop ends without a failed step and
    slim.learning.train's final save is where the training thread meets it: the StopRequest must hear of it."""
    def failing_save(self, sess, *args, **kwargs):
        raise error
    monkeypatch.setattr(tf.train.Saver, 'save', failing_save)
    heard = []
    with tf.Graph().as_default():
        tf.Variable(0., name='w')
        saver = distributed.ChiefSaver(types.SimpleNamespace(stopped=False, chief_unblock_op=None),
                                       on_lost_cluster=heard.append)
    with pytest.raises(type(error)):
        saver.save(None, 'model.ckpt')
    assert heard == ([error] if reported else [])
