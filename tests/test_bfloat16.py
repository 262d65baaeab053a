"""--bfloat16: oneDNN's auto mixed precision rewrite in the session config, refused where the CPU lacks
native bfloat16, and, where it has it, a network whose outputs move by bfloat16's rounding only."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim
from tensorflow.core.protobuf import rewriter_config_pb2

from nets import nets_factory
from tests.train_fixtures import SMALL, make_tiny_dataset, parse_flags, plan_from_flags, train_in_process
from utils import devices
from utils import train_plan
from utils.errors import UserError

NATIVE = devices.cpu_has_bfloat16()


def test_session_config_turns_the_rewrite_on_only_when_asked():
    on = rewriter_config_pb2.RewriterConfig.ON
    assert devices.session_config(bfloat16=True).graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == on
    assert devices.session_config().graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 != on


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 fma\n\nprocessor\t: 1\n')
    assert devices.cpu_has_bfloat16(str(path))
    path.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f fma\n')
    assert not devices.cpu_has_bfloat16(str(path))
    assert not devices.cpu_has_bfloat16(str(tmp_path / 'missing'))


def test_refused_on_a_cpu_without_bfloat16(tmp_path, monkeypatch):
    records = make_tiny_dataset(str(tmp_path / 'data'), num_train=2, num_test=0)
    monkeypatch.setattr(train_plan.device_info, 'cpu_has_bfloat16', lambda: False)
    with pytest.raises(UserError, match='--bfloat16: this CPU has no AVX512_BF16 or AMX-BF16'):
        plan_from_flags(parse_flags(SMALL + [f'--dataset_dir={records}', f'--train_dir={tmp_path / "t"}',
                                             '--bfloat16']))


def _ssd_outputs(bfloat16):
    """Logits of SSD300 (depth 0.25, fixed weights and image) run with or without the rewrite."""
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        net = nets_factory.get_network('ssd_300_vgg', 5, 0.25)
        image = tf.constant(np.random.default_rng(0).normal(0, 50, [1, 300, 300, 3]).astype(np.float32))
        with slim.arg_scope(net.arg_scope()):
            logits, _, _ = net.build(image, is_training=False)
        with tf.Session(config=devices.session_config(bfloat16=bfloat16)) as session:
            session.run(tf.global_variables_initializer())
            return session.run(logits)


@pytest.mark.skipif(not NATIVE, reason='this CPU has no native bfloat16 (AVX512_BF16 / AMX)')
def test_rewrite_changes_the_outputs_by_bfloat16_rounding_only():
    full, mixed = _ssd_outputs(False), _ssd_outputs(True)
    difference = np.abs(mixed - full).max() / np.abs(full).max()
    assert 1e-5 < difference < 0.05   # bfloat16 keeps 8 significant bits: about 0.4% per rounding


@pytest.mark.skipif(not NATIVE, reason='this CPU has no native bfloat16 (AVX512_BF16 / AMX)')
def test_training_steps_with_bfloat16(tmp_path):
    records = make_tiny_dataset(str(tmp_path / 'data'), num_train=4, num_test=0)
    step_fn = train_in_process(SMALL + [f'--dataset_dir={records}', f'--train_dir={tmp_path / "t"}',
                                        f'--pretrained_path={tmp_path}', '--max_number_of_steps=3', '--bfloat16',
                                        '--save_interval_secs=0', '--log_every_n_steps=1'])
    assert step_fn.current_step == 3 and all(np.isfinite(loss) for _, loss in step_fn.loss_history)
