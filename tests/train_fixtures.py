"""Shared by the training tests: a tiny converted demo dataset, flag parsing for train_ssd_network, and
loopback clusters of training processes."""
import dataclasses
import os
import re
import socket
import subprocess
import sys
import time

from absl import flags

import train_ssd_network
from datasets import dataset_info, demo_dataset, demo_drawing
from datasets.voc_to_tfrecords import ConversionOptions, convert_voc_dataset
from utils import devices, startup_report, train_plan
from utils.stop_request import StopRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--depth_multiplier=0.125', '--batch_size=4', '--num_readers=1', '--num_preprocessing_threads=2']


def make_tiny_dataset(root, num_train=8, num_test=2):
    """Demo images (small) converted to TFRecords in root/records; returns that folder."""
    images, records = os.path.join(root, 'images'), os.path.join(root, 'records')
    style = dataclasses.replace(demo_drawing.STYLES['demo'], image_size=(96, 128))
    demo_dataset.generate_demo_dataset(images, seed=0, num_train=num_train, num_test=num_test, style=style)
    class_names = dataset_info.read_labels_file(os.path.join(images, 'labels.txt'))
    convert_voc_dataset(images, records, ConversionOptions(dataset_name='demo', class_names=class_names),
                        log_fn=lambda *_: None)
    return records


def parse_flags(args):
    """A fresh FlagValues with the training flags, parsed from `args`."""
    fv = flags.FlagValues()
    train_ssd_network.define_flags(fv)
    fv(['train_ssd_network.py'] + list(args))
    return fv


def plan_from_flags(fv, log_fn=lambda *_: None):
    """The steps main runs before the graph: flags -> TrainConfig, the dataset, the TrainPlan, the anchor fit."""
    config = train_ssd_network.config_from_flags(fv)
    train_plan.prepare_dataset(config, log_fn)
    return train_plan.fit_to_split(train_plan.make_plan(config, devices.visible_gpu_count()))


def train_in_process(args):
    """The script's steps as main runs them, from flag arguments (no signal handlers, no training thread);
    returns the TrainStep."""
    plan = plan_from_flags(parse_flags(args))
    startup_report.training_report(plan)
    return train_ssd_network.train(plan, StopRequest())


def free_ports(count):
    """`count` TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(('127.0.0.1', 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Cluster:
    """train_ssd_network.py processes on loopback: one ps and `num_workers` workers, logs in files."""

    def __init__(self, workdir, records, train_dir, num_workers, *args):
        ports = free_ports(1 + num_workers)
        self.workdir, self.processes, self.started = str(workdir), {}, 0
        self.common = [sys.executable, os.path.join(ROOT, 'train_ssd_network.py'), f'--dataset_dir={records}',
                       f'--train_dir={train_dir}', f'--pretrained_path={workdir}', '--log_every_n_steps=1',
                       f'--ps_hosts=127.0.0.1:{ports[0]}', '--cluster_wait_secs=120',
                       '--worker_hosts=' + ','.join(f'127.0.0.1:{p}' for p in ports[1:])] + SMALL + list(args)

    def start(self, job, task=0):
        name = f'{job}{task}'
        self.started += 1
        log = open(os.path.join(self.workdir, f'{name}.{self.started}.log'), 'w')
        self.processes[name] = (subprocess.Popen(self.common + [f'--job_name={job}', f'--task={task}'],
                                                 stdout=log, stderr=subprocess.STDOUT), log.name)
        return self.processes[name][0]

    def log(self, name):
        with open(self.processes[name][1]) as source:
            return source.read()

    def wait_for(self, name, pattern, timeout=180):
        """The first match of regex `pattern` in the process's log; fails after timeout or if it exits."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = re.search(pattern, self.log(name))
            if found:
                return found
            assert self.processes[name][0].poll() is None, f'{name} exited:\n{self.log(name)[-3000:]}'
            time.sleep(0.2)
        raise AssertionError(f'{name}: no {pattern!r} after {timeout} s:\n{self.log(name)[-3000:]}')

    def finish(self, name, timeout=120):
        """Exit code of the process once it ends (killed after timeout)."""
        process = self.processes[name][0]
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f'{name} did not exit in {timeout} s:\n{self.log(name)[-3000:]}') from None

    def stop_all(self):
        for process, _ in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
