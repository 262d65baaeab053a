"""Training on several machines with TensorFlow's gRPC runtime: parameter servers (ps) hold the variables,
workers run the clones; worker 0 is the chief (initialises or restores, writes checkpoints and summaries).

Each process is started with the same flags plus its --job_name and --task. Variables go to the ps tasks
round-robin (tf.train.replica_device_setter); a worker's session sees only the ps tasks and itself
(device filters), so it never waits for the other workers. Asynchronous updates by default;
--sync_replicas aggregates --replicas_to_aggregate gradients per step (tf.train.SyncReplicasOptimizer).
"""
import dataclasses
import re
import socket
import time

import tensorflow.compat.v1 as tf
from absl import logging

from utils import clones
from utils.errors import UserError

JOB_NAMES = ('ps', 'worker')


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """This process's place in a cluster; empty host lists mean one process."""
    ps_hosts: tuple = ()
    worker_hosts: tuple = ()
    job_name: str = None
    task: int = 0
    sync_replicas: bool = False
    replicas_to_aggregate: int = None   # default: the number of workers
    wait_secs: int = 600                # --cluster_wait_secs

    @property
    def in_cluster(self):
        return bool(self.worker_hosts)

    @property
    def is_chief(self):
        """Worker 0 of a cluster, or the one process."""
        return not self.in_cluster or (self.job_name == 'worker' and self.task == 0)

    def replicas_per_step(self):
        """Gradients aggregated per global step with --sync_replicas, 0 when asynchronous."""
        return (self.replicas_to_aggregate or len(self.worker_hosts)) if self.sync_replicas else 0


def split_host_port(address):
    """'host:port' or '[v6 address]:port' -> (host, port as int); the brackets are not part of the host."""
    host, _, port = address.rpartition(':')
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return host, int(port)


def parse_hosts(text, flag):
    """'h1:p1,h2:p2' -> ['h1:p1', 'h2:p2']; UserError naming the flag for an entry without a numeric port."""
    hosts = [host.strip() for host in (text or '').split(',') if host.strip()]
    for host in hosts:
        name, _, port = host.rpartition(':')
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f'--{flag}: {host!r} is not host:port')
    if len(set(hosts)) != len(hosts):
        raise UserError(f'--{flag}: lists a host:port twice')
    return hosts


def check_cluster_settings(ps_hosts, worker_hosts, job_name, task, sync_replicas, replicas_to_aggregate):
    """UserError for inconsistent cluster flags. Returns True for a cluster run, False for one process."""
    if not ps_hosts and not worker_hosts:
        if job_name or sync_replicas:
            raise UserError('--job_name / --sync_replicas need --ps_hosts and --worker_hosts')
        return False
    if not ps_hosts or not worker_hosts:
        raise UserError('a cluster needs both --ps_hosts and --worker_hosts')
    if set(ps_hosts) & set(worker_hosts):
        raise UserError(f'--ps_hosts and --worker_hosts share {sorted(set(ps_hosts) & set(worker_hosts))[0]}')
    if job_name not in JOB_NAMES:
        raise UserError(f'--job_name={job_name}: use ps or worker')
    count = len(ps_hosts) if job_name == 'ps' else len(worker_hosts)
    if not 0 <= task < count:
        raise UserError(f'--task={task}: the {job_name} job has tasks 0..{count - 1}')
    if replicas_to_aggregate is not None and replicas_to_aggregate < 1:
        raise UserError(f'--replicas_to_aggregate={replicas_to_aggregate}: must be >= 1')
    if replicas_to_aggregate is not None and not sync_replicas:
        raise UserError('--replicas_to_aggregate needs --sync_replicas')
    return True


def start_server(ps_hosts, worker_hosts, job_name, task, config=None):
    """This process's tf.train.Server in the cluster {ps: ps_hosts, worker: worker_hosts}."""
    cluster = tf.train.ClusterSpec({'ps': ps_hosts, 'worker': worker_hosts})
    try:
        return tf.train.Server(cluster, job_name=job_name, task_index=task, config=config, start=True)
    except (tf.errors.OpError, RuntimeError) as err:
        address = (ps_hosts if job_name == 'ps' else worker_hosts)[task]
        raise UserError(f'cannot start the {job_name} {task} server on {address}: '
                        f'{str(err).splitlines()[0]}') from None


def serve_parameters(cluster, log_fn=logging.info):
    """Run parameter server cluster.task until Ctrl-C / SIGTERM (a Python wait, so the signal is seen at once)."""
    server = start_server(cluster.ps_hosts, cluster.worker_hosts, 'ps', cluster.task)
    log_fn(f'parameter server {cluster.task} listening on {cluster.ps_hosts[cluster.task]}; stop it with Ctrl-C')
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        log_fn('parameter server stopped')
    del server


def join_cluster(cluster, num_clones, use_gpus, server_config, log_fn=logging.info):
    """Worker cluster.task: start its server (server_config creates its devices), wait for the parameter
    servers (saying so with log_fn), and return (server, Deployment); keep the server object alive while
    training."""
    server = start_server(cluster.ps_hosts, cluster.worker_hosts, 'worker', cluster.task, server_config)
    wait_for_hosts(cluster.ps_hosts, cluster.wait_secs, 'parameter server', log_fn=log_fn)
    return server, worker_deployment(server, cluster.ps_hosts, cluster.worker_hosts, cluster.task, num_clones,
                                     use_gpus)


def worker_deployment(server, ps_hosts, worker_hosts, task, num_clones, use_gpus):
    """clones.Deployment of worker `task`: clone i on its GPU i / logical CPU i, variables on the ps."""
    worker = f'/job:worker/task:{task}'
    devices = [worker + device for device in clones.compute_devices(num_clones, use_gpus)]
    cluster = tf.train.ClusterSpec({'ps': ps_hosts, 'worker': worker_hosts})
    device_fns = [tf.train.replica_device_setter(cluster=cluster, worker_device=device) for device in devices]
    role = 'chief' if task == 0 else 'non-chief'
    return clones.Deployment(
        master=server.target, is_chief=task == 0, clone_devices=devices, device_fns=device_fns,
        input_device=worker + '/device:CPU:0', cpu_devices=clones.cpu_device_count(num_clones, use_gpus),
        device_filters=['/job:ps', worker],
        description=f'worker {task} of {len(worker_hosts)} ({role}), master {server.target}, variables on '
                    f'{len(ps_hosts)} ps task(s)')


def wait_for_hosts(hosts, timeout_secs, what, poll_secs=1.0, clock=time.time, log_fn=None):
    """Wait until every host:port accepts a TCP connection (TensorFlow's own session creation waits for
    ever on a missing task); UserError after timeout_secs. log_fn, when given, hears once of each host that
    does not answer at first, so that a long wait is not a silent one."""
    deadline = clock() + timeout_secs
    pending, told = list(hosts), set()
    while pending:
        try:
            with socket.create_connection(split_host_port(pending[0]), timeout=min(poll_secs * 2, 5.0)):
                pending.pop(0)
                continue
        except OSError:
            pass
        if log_fn is not None and pending[0] not in told:
            told.add(pending[0])
            log_fn(f'waiting for {what} {pending[0]} to answer (up to {timeout_secs:g} s, --cluster_wait_secs)')
        if clock() >= deadline:
            raise UserError(f'{what} {pending[0]} does not answer after {timeout_secs:g} s; start it first '
                            f'(the same command with --job_name=ps) or check the host and port')
        time.sleep(poll_secs)


# What a session call raises when a task of the cluster is gone (or, with --cluster_wait_secs, silent).
LOST_CLUSTER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)


def lost_cluster_message(error):
    """The one line printed when a worker lost a task of the cluster (one of LOST_CLUSTER_ERRORS)."""
    return (f'lost contact with the cluster ({describe_cluster_error(error)}); a parameter server may be gone: '
            f'restart the cluster and the chief resumes from its last checkpoint')


def describe_cluster_error(error):
    """'<task>: <gRPC reason>' from a TensorFlow error about a lost task (e.g. '/job:ps/replica:0/task:0:
    Socket closed'), else the error's first line. The task is the gRPC remote target when named, else the
    task of the 'From /job:...:' line; the reason is the line after that one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    origin = next((i for i, line in enumerate(lines[:-1]) if re.search(r'From /job:\S+:$', line)), None)
    if origin is None:
        return lines[0] if lines else type(error).__name__
    remote = re.search(r'remote target (/job:\S+)', str(error))
    task = remote.group(1) if remote else re.search(r'From (/job:\S+):$', lines[origin]).group(1)
    return f'{task}: {lines[origin + 1]}'


class ClusterStop:
    """A flag on the parameter servers: the chief raises it when it stops (max steps, Ctrl-C), the other
    workers read it after each step and stop too.

    The flag belongs to no variable collection, so checkpoints do not hold it and no default initialiser
    touches it; init_op(is_chief) is run by every worker's local init: the chief clears it (a new run), another
    worker initialises it only if nobody has, so a worker that restarts after the chief stopped sees the stop.
    In sync mode stopping also needs: tokens for workers blocked waiting for the next step (release_op), and,
    after the chief's final checkpoint, replicas_to_aggregate zero gradients in every gradient accumulator so
    that the chief's queue runner, blocked waiting for the next round, completes it and sees the stop request
    (chief_unblock_op; see ChiefSaver). That last round is never saved.
    """

    def __init__(self, num_workers, sync_optimizer=None, replicas_to_aggregate=0, trained_variables=()):
        self.flag = tf.Variable(False, trainable=False, name='cluster_stop', collections=[])
        self.raise_op = self.flag.assign(True)
        self.release_op = self.chief_unblock_op = None
        self.stopped = False
        if sync_optimizer is not None:
            self.release_op = sync_optimizer.get_init_tokens_op(num_workers)
            self.chief_unblock_op = tf.group(*[
                feed for variable in trained_variables
                for feed in _zero_gradients(variable, replicas_to_aggregate)], name='unblock_chief_queue_runner')

    def init_op(self, is_chief):
        """Clear the flag (chief), or set it to False only where it is not initialised yet (other workers)."""
        if is_chief:
            return self.flag.initializer
        return tf.cond(tf.is_variable_initialized(self.flag), lambda: tf.constant(False),
                       lambda: tf.identity(self.flag.assign(False)))

    def requested(self, session):
        return bool(session.run(self.flag))

    def announce(self, session):
        """The chief stops: raise the flag and let blocked workers finish their step."""
        self.stopped = True
        session.run(self.raise_op)
        if self.release_op is not None:
            session.run(self.release_op)


def _zero_gradients(variable, count):
    """`count` zero gradients applied to the SyncReplicasOptimizer's accumulator of `variable`, reached through
    the public ConditionalAccumulator by the shared name the optimizer gives it ('<variable name>/grad_accum'
    on the variable's device; checked on TensorFlow 2.21 by tests/test_distributed.py)."""
    with tf.device(variable.device):
        accumulator = tf.ConditionalAccumulator(variable.dtype.base_dtype, shape=variable.shape,
                                                shared_name=variable.name + '/grad_accum')
        zeros = tf.zeros(variable.shape, variable.dtype.base_dtype)
        never_stale = tf.constant(2 ** 62, tf.int64)
        return [accumulator.apply_grad(zeros, local_step=never_stale) for _ in range(count)]


class ChiefSaver(tf.train.Saver):
    """The chief's saver: once the cluster is stopping, its save (slim.learning.train's final checkpoint)
    is followed by ClusterStop.chief_unblock_op, so the chief exits at once instead of waiting out the
    supervisor's 120 s grace period for a queue runner that can never finish.

    A save that finds a task gone (LOST_CLUSTER_ERRORS) is passed to on_lost_cluster before it propagates:
    when the supervisor's step counter thread met the lost parameter server first, the loop ends without a
    failed step, and this final save is the training thread's first sight of it (the session close that
    follows can hang)."""

    def __init__(self, cluster_stop, on_lost_cluster=lambda error: None, **kwargs):
        super().__init__(**kwargs)
        self.cluster_stop = cluster_stop
        self.on_lost_cluster = on_lost_cluster

    def save(self, sess, *args, **kwargs):
        try:
            path = super().save(sess, *args, **kwargs)
        except LOST_CLUSTER_ERRORS as err:
            self.on_lost_cluster(err)
            raise
        if self.cluster_stop.stopped and self.cluster_stop.chief_unblock_op is not None:
            sess.run(self.cluster_stop.chief_unblock_op)
        return path


def wait_until_initialised(master, config, timeout_secs, interrupted=lambda: False, poll_secs=1.0,
                           log_fn=logging.info):
    """Non-chief workers: poll (every poll_secs, not the supervisor's 30 s) until the chief has
    initialised or restored every global variable; UserError after timeout_secs, KeyboardInterrupt
    once interrupted() (a stop request) is true."""
    uninitialised = tf.report_uninitialized_variables(tf.global_variables())
    deadline = time.time() + timeout_secs
    announced = False
    with tf.Session(master, config=config) as session:
        while True:
            missing = session.run(uninitialised)
            if not len(missing):
                return
            if not announced:
                log_fn('waiting for the chief (worker 0) to initialise or restore the model')
                announced = True
            if interrupted():
                raise KeyboardInterrupt
            if time.time() >= deadline:
                raise UserError(f'the chief (worker 0) has not initialised the model after {timeout_secs:g} s '
                                f'(e.g. {missing[0].decode()} is uninitialised); is worker 0 running?')
            time.sleep(poll_secs)
