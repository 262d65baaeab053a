"""Learning-rate schedules against hand-computed values; optimizers take their flags' hyper-parameters."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from utils import learning_schedules as ls
from utils.errors import UserError


def rates(config, steps, decay_steps):
    """The schedule evaluated at each step (one graph, a placeholder global step)."""
    with tf.Graph().as_default():
        step = tf.placeholder(tf.int64, [])
        rate = ls.learning_rate_tensor(config, step, decay_steps)
        with tf.Session() as session:
            return [float(session.run(rate, {step: s})) for s in steps]


def test_exponential_staircase():
    config = ls.ScheduleConfig('exponential', learning_rate=0.1, learning_rate_decay_factor=0.5)
    assert rates(config, [0, 9, 10, 19, 25], 10) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_fixed():
    assert rates(ls.ScheduleConfig('fixed', learning_rate=0.01), [0, 1000], 5) == pytest.approx([0.01, 0.01])


def test_polynomial_reaches_end_rate_and_stays():
    config = ls.ScheduleConfig('polynomial', learning_rate=0.1, end_learning_rate=0.01)
    assert rates(config, [0, 5, 10, 20], 10) == pytest.approx([0.1, 0.055, 0.01, 0.01])


def test_piecewise_explicit_values():
    config = ls.ScheduleConfig('piecewise', learning_rate_boundaries=(10, 20), learning_rate_values=(1.0, 0.5, 0.25))
    assert rates(config, [0, 10, 11, 20, 21], 1) == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])


def test_piecewise_default_values_give_the_caffe_recipe():
    config = ls.ScheduleConfig('piecewise', learning_rate=0.001, learning_rate_decay_factor=0.1)
    assert rates(config, [0, 80000, 80001, 100001], 1) == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])


def test_cosine():
    config = ls.ScheduleConfig('cosine', learning_rate=0.1, end_learning_rate=0.0)
    expected = [0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.0, 0.0]
    assert rates(config, [0, 25, 50, 100, 200], 100) == pytest.approx(expected, abs=1e-8)


def test_cosine_with_linear_warmup():
    config = ls.ScheduleConfig('cosine', learning_rate=0.1, end_learning_rate=0.0, warmup_steps=4)
    cosine = lambda s: 0.05 * (1 + math.cos(math.pi * s / 100))  # noqa: E731
    expected = [cosine(0) * 0.25, cosine(1) * 0.5, cosine(3) * 1.0, cosine(50)]
    assert rates(config, [0, 1, 3, 50], 100) == pytest.approx(expected, abs=1e-8)


def test_decay_steps_for():
    assert ls.decay_steps_for(300, 32, 2.0) == 18      # int(300 / 32 * 2) = int(18.75)
    assert ls.decay_steps_for(8, 32, 2.0) == 1         # never 0 (a division by zero in the schedule)


@pytest.mark.parametrize('config, flag', [
    (ls.ScheduleConfig('stepwise'), '--learning_rate_decay_type=stepwise'),
    (ls.ScheduleConfig(learning_rate=0.0), '--learning_rate=0.0'),
    (ls.ScheduleConfig('piecewise', learning_rate_boundaries=(10, 5)), '--learning_rate_boundaries=10,5'),
    (ls.ScheduleConfig('piecewise', learning_rate_boundaries=(10,), learning_rate_values=(1.0,)),
     '--learning_rate_values'),
    (ls.ScheduleConfig(warmup_steps=-1), '--warmup_steps=-1'),
])
def test_bad_schedule_names_the_flag(config, flag):
    with pytest.raises(UserError, match=flag):
        ls.check_schedule(config)


def test_unknown_optimizer_lists_the_known_ones():
    with pytest.raises(UserError, match=r'--optimizer=adamw: unknown; use one of adadelta, adagrad, adam'):
        ls.check_optimizer(ls.OptimizerConfig('adamw'))


def one_step(config, learning_rate, grad, steps=1, start=1.0):
    """w after `steps` updates of the optimizer on loss = grad * w (constant gradient `grad`)."""
    with tf.Graph().as_default():
        weight = tf.Variable(start, dtype=tf.float32)
        train = ls.make_optimizer(config, learning_rate).minimize(grad * weight)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            for _ in range(steps):
                session.run(train)
            return float(session.run(weight))


def test_sgd_step():
    assert one_step(ls.OptimizerConfig('sgd'), 0.1, 2.0) == pytest.approx(1.0 - 0.2)


def test_momentum_uses_its_flag():
    # v1 = g, v2 = m v1 + g; w = 1 - lr (v1 + v2)
    lr, g, m = 0.1, 2.0, 0.5
    assert one_step(ls.OptimizerConfig('momentum', momentum=m), lr, g, steps=2) == pytest.approx(
        1.0 - lr * (g + (m * g + g)))


def test_adam_uses_betas_and_opt_epsilon():
    lr, g, b1, b2, eps = 0.1, 2.0, 0.8, 0.99, 1.0
    m, v = (1 - b1) * g, (1 - b2) * g * g
    lr_t = lr * math.sqrt(1 - b2) / (1 - b1)
    expected = 1.0 - lr_t * m / (math.sqrt(v) + eps)
    config = ls.OptimizerConfig('adam', adam_beta1=b1, adam_beta2=b2, opt_epsilon=eps)
    assert one_step(config, lr, g) == pytest.approx(expected, rel=1e-6)


def test_rmsprop_uses_decay_momentum_and_epsilon():
    # TF1 RMSProp: ms starts at 1; ms = d ms + (1 - d) g^2; mom = lr g / sqrt(ms + eps); w -= mom.
    lr, g, d, eps = 0.1, 2.0, 0.7, 0.5
    ms = d * 1.0 + (1 - d) * g * g
    config = ls.OptimizerConfig('rmsprop', rmsprop_decay=d, rmsprop_momentum=0.3, opt_epsilon=eps)
    assert one_step(config, lr, g) == pytest.approx(1.0 - lr * g / math.sqrt(ms + eps), rel=1e-6)


@pytest.mark.parametrize('name, kind', [('adadelta', tf.train.AdadeltaOptimizer),
                                        ('adagrad', tf.train.AdagradOptimizer),
                                        ('ftrl', tf.train.FtrlOptimizer)])
def test_other_optimizers_move_the_weight_downhill(name, kind):
    config = ls.OptimizerConfig(name)
    assert isinstance(ls.make_optimizer(config, 0.1), kind)
    assert one_step(config, 0.1, 2.0, steps=3) < 1.0


@pytest.mark.parametrize('kind, max_steps, epochs_given, expected', [
    ('cosine', 3000, False, (3000, '= --max_number_of_steps')),      # falls over the whole run
    ('polynomial', 3000, False, (3000, '= --max_number_of_steps')),
    ('cosine', 3000, True, (75, '--num_epochs_per_decay=2')),         # the user's length wins
    ('cosine', None, False, (75, '--num_epochs_per_decay=2')),        # no run length known
    ('exponential', 3000, False, (75, '--num_epochs_per_decay=2')),   # a period, not a run length
])
def test_decay_length_ends_cosine_and_polynomial_with_the_run(kind, max_steps, epochs_given, expected):
    config = ls.ScheduleConfig(kind)
    assert ls.decay_length(config, 150, 4, max_steps, epochs_given) == expected    # int(150 / 4 * 2) = 75


def test_descriptions_name_the_used_values():
    assert ls.describe_optimizer(ls.OptimizerConfig('momentum', momentum=0.8)) == 'momentum, momentum=0.8'
    text = ls.describe_schedule(ls.ScheduleConfig('piecewise', learning_rate=1.0, learning_rate_decay_factor=0.1,
                                                  learning_rate_boundaries=(5,)), 1)
    assert text == 'piecewise: 1 until step 5, 0.1 after'
    cosine = ls.ScheduleConfig('cosine', learning_rate=0.002, end_learning_rate=1e-5, warmup_steps=50)
    assert ls.describe_schedule(cosine, 3000, '= --max_number_of_steps') == (
        'cosine: 0.002 -> 1e-05 over 3000 steps (= --max_number_of_steps), linear warm-up over the first 50 steps')
    assert ls.describe_schedule(ls.ScheduleConfig(), 150, '--num_epochs_per_decay=2') == (
        'exponential: 0.001 x 0.94 every 150 steps (--num_epochs_per_decay=2) (staircase)')
    assert np.isclose(ls.piecewise_values(ls.ScheduleConfig(learning_rate_values=(0.3, 0.2))), (0.3, 0.2)).all()


def test_low_rate_step_by_hand():
    # 0.94 ** 74 = 0.0103, 0.94 ** 75 = 0.0097: the 75th decay takes the staircase under 1% of the start.
    assert ls.low_rate_step(ls.ScheduleConfig(), 1) == 75 and ls.low_rate_step(ls.ScheduleConfig(), 40) == 3000
    exact = ls.ScheduleConfig(learning_rate=1.0, learning_rate_decay_factor=0.1)    # 0.1 ** 2 = 1% exactly
    assert rates(exact, [19, 20], 10) == pytest.approx([0.1, 0.01]) and ls.low_rate_step(exact, 10) == 20
    assert ls.low_rate_step(ls.ScheduleConfig('cosine'), 7) == 7                      # the end rate from step D
    assert ls.low_rate_step(ls.ScheduleConfig('fixed'), 7) is None
    assert ls.low_rate_step(ls.ScheduleConfig('piecewise'), 7) is None


def test_a_rate_spent_in_the_first_steps_is_warned_about():
    # README section 3's defaults on 19 images: batch 32, 2 epochs per decay -> a decay every step.
    warning = ls.early_decay_warning(ls.ScheduleConfig(), 1, '--num_epochs_per_decay=2')
    assert warning == ('warning: the learning rate is down to 1% of --learning_rate by step 75, as a decay period '
                       'is 1 step(s) (--num_epochs_per_decay=2); a larger --num_epochs_per_decay, or '
                       '--learning_rate_decay_type=cosine with --max_number_of_steps, keeps it up longer')
    assert 'down to --end_learning_rate=0.0001 by step 5' in ls.early_decay_warning(
        ls.ScheduleConfig('cosine'), 5, '--num_epochs_per_decay=2')
    assert ls.early_decay_warning(ls.ScheduleConfig(), 1, '', max_number_of_steps=60) is None    # the run ends first
    assert ls.early_decay_warning(ls.ScheduleConfig(), 14, '') is None                            # step 1050
    demo = ls.ScheduleConfig('cosine', learning_rate=0.002, end_learning_rate=1e-5)
    assert ls.early_decay_warning(demo, 4500, '= --max_number_of_steps', 4500) is None         # ends at the run's end


def test_adam_from_scratch_without_a_warm_up_is_warned_about():
    warning = ls.scratch_warmup_warning(ls.OptimizerConfig(), ls.ScheduleConfig())
    assert warning.startswith('warning: from scratch without a warm-up') and '--warmup_steps=50' in warning
    assert ls.scratch_warmup_warning(ls.OptimizerConfig(), ls.ScheduleConfig(warmup_steps=50)) is None
    assert ls.scratch_warmup_warning(ls.OptimizerConfig('momentum'), ls.ScheduleConfig()) is None


def test_decay_steps_read_back_from_the_description():
    warm_cosine = ls.ScheduleConfig('cosine', warmup_steps=50)
    for config, steps in ((ls.ScheduleConfig(), 150), (warm_cosine, 3000), (ls.ScheduleConfig('polynomial'), 7)):
        described = 'schedule ' + ls.describe_schedule(config, steps, '--num_epochs_per_decay=2')
        assert ls.described_decay_steps(described) == steps
    assert ls.described_decay_steps('schedule fixed: 0.001, linear warm-up over the first 50 steps') is None


def test_period_change_warning_gives_both_rates():
    """Cosine from 0.001 to 0.0001 at step 2: over 4 steps halfway, 0.0001 + 0.0009 / 2 = 0.00055; over 8 steps a
    quarter of the way, 0.0001 + 0.0009 (1 + cos(pi / 4)) / 2 = 0.000868; over 2 steps at the end, 0.0001."""
    cosine = ls.ScheduleConfig('cosine', learning_rate=0.001, end_learning_rate=0.0001)
    assert ls.period_change_warning(cosine, 8, '--num_epochs_per_decay=2', 2, 4) == (
        'warning: resuming at step 2: --num_epochs_per_decay=2 now makes 8 decay steps, where the run that saved '
        'the checkpoint had 4 (another --batch_size, number of training samples or of synchronous replicas), so '
        'the cosine rate at step 2 jumps from 0.00055 to 0.000868; --num_epochs_per_decay=1 keeps about the '
        'earlier 4')
    assert 'jumps from 0.00055 to 0.0001;' in ls.period_change_warning(cosine, 2, '--num_epochs_per_decay=2', 2, 4)
    # In the warm-up (step 2 of 6: x 3/6), both rates are ramped.
    warm = ls.ScheduleConfig('cosine', learning_rate=0.001, end_learning_rate=0.0001, warmup_steps=6)
    assert 'jumps from 0.000275 to 0.000434;' in ls.period_change_warning(warm, 8, '--num_epochs_per_decay=2', 2, 4)
    # Nothing to say: the same steps, a cosine over the run's length, a fixed rate, or an exponential whose rate
    # moves by under a tenth (0.94 ** 1 against 0.94 ** 0 at step 5).
    assert ls.period_change_warning(cosine, 4, '--num_epochs_per_decay=2', 2, 4) is None
    assert ls.period_change_warning(cosine, 8, ls.RUN_LENGTH_SOURCE, 2, 4) is None
    assert ls.period_change_warning(ls.ScheduleConfig('fixed'), 8, '--num_epochs_per_decay=2', 5, 4) is None
    assert ls.period_change_warning(ls.ScheduleConfig(), 8, '--num_epochs_per_decay=2', 5, 4) is None
