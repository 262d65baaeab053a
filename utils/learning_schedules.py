"""Learning-rate schedules and optimizers, configured by values named like SSD-Tensorflow's flags.

Field names of `ScheduleConfig` and `OptimizerConfig` equal the training script's flag names, so the script
fills them with `dataclasses.fields` and nothing is renamed on the way.
"""
import dataclasses
import math
import re

import tensorflow.compat.v1 as tf

from utils.errors import UserError

DECAY_TYPES = ('exponential', 'fixed', 'polynomial', 'piecewise', 'cosine')
# Schedules that fall to an end rate: without an explicit num_epochs_per_decay they fall over the whole run.
RUN_LENGTH_DECAY_TYPES = ('polynomial', 'cosine')
RUN_LENGTH_SOURCE = '= --max_number_of_steps'   # decay_length's source when they fall over the whole run
# early_decay_warning: a rate at 1% of its start has all but stopped training; spent within the first 1000
# steps, it is a schedule measured in epochs of a dataset smaller than a few batches.
LOW_RATE_FRACTION = 0.01
EARLY_STEPS = 1000
# horizon_change_warning: a rate back up by a tenth of its range is a restart; less is a few more steps' worth.
RESTART_FRACTION = 0.1
OPTIMIZER_NAMES = ('adadelta', 'adagrad', 'adam', 'ftrl', 'momentum', 'rmsprop', 'sgd')


def _field(default, help_text):
    """A dataclass field whose metadata holds its flag's help text (the training script defines the flags)."""
    return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How the learning rate moves with the global step (defaults: the course's)."""
    learning_rate_decay_type: str = _field('exponential', 'One of ' + ', '.join(DECAY_TYPES) + '.')
    learning_rate: float = _field(0.001, 'Initial learning rate.')
    end_learning_rate: float = _field(0.0001, 'Final rate of the polynomial and cosine schedules.')
    learning_rate_decay_factor: float = _field(0.94, 'Decay factor (exponential; piecewise default values).')
    num_epochs_per_decay: float = _field(2.0, 'Epochs per decay period (exponential, polynomial, cosine; for '
                                              'polynomial and cosine, the epochs over which the rate falls to the '
                                              'end rate, then stays there; when not given, they fall over '
                                              '--max_number_of_steps if that is given).')
    learning_rate_boundaries: tuple = _field((80000, 100000), 'Piecewise: steps where the rate changes.')
    learning_rate_values: tuple = _field((), 'Piecewise: the rates (one more than the boundaries); default '
                                             'learning_rate * learning_rate_decay_factor^i.')
    warmup_steps: int = _field(0, 'Linear warm-up of the rate over the first n steps.')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer name and hyper-parameters, with SSD-Tensorflow's defaults except opt_epsilon: 1e-8 (its 1.0,
    from TF-Slim's RMSProp recipe, held Adam back on the demo data: bench/RESULTS.md)."""
    optimizer: str = _field('adam', 'One of ' + ', '.join(OPTIMIZER_NAMES) + '.')
    adadelta_rho: float = 0.95
    adagrad_initial_accumulator_value: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    opt_epsilon: float = _field(1e-8, 'Epsilon of adam, rmsprop and adadelta (SSD-Tensorflow\'s default, 1.0, made '
                                      'Adam learn far slower; --opt_epsilon=1.0 restores it).')
    ftrl_learning_rate_power: float = -0.5
    ftrl_initial_accumulator_value: float = 0.1
    ftrl_l1: float = 0.0
    ftrl_l2: float = 0.0
    momentum: float = 0.9
    rmsprop_momentum: float = 0.9
    rmsprop_decay: float = 0.9


def decay_steps_for(num_samples, images_per_step, num_epochs_per_decay):
    """Steps between decays: int(num_samples / images_per_step * num_epochs_per_decay), at least 1."""
    return max(1, int(num_samples / images_per_step * num_epochs_per_decay))


def decay_length(config, num_samples, images_per_step, max_number_of_steps=None, epochs_given=True):
    """(decay steps D, where D comes from, for the start-up report). polynomial and cosine fall over the whole
    run, D = max_number_of_steps, when it is given and num_epochs_per_decay was not (epochs_given False), so
    that changing the run's length keeps the rate ending at its last step; otherwise
    D = decay_steps_for(num_samples, images_per_step, num_epochs_per_decay)."""
    if max_number_of_steps and not epochs_given and config.learning_rate_decay_type in RUN_LENGTH_DECAY_TYPES:
        return max_number_of_steps, RUN_LENGTH_SOURCE
    return (decay_steps_for(num_samples, images_per_step, config.num_epochs_per_decay),
            f'--num_epochs_per_decay={config.num_epochs_per_decay:g}')


def piecewise_values(config):
    """The piecewise schedule's len(boundaries) + 1 rates: --learning_rate_values when given, else
    learning_rate * learning_rate_decay_factor ** i (0.1 gives the Caffe 80k/100k recipe)."""
    if config.learning_rate_values:
        return tuple(float(v) for v in config.learning_rate_values)
    return tuple(config.learning_rate * config.learning_rate_decay_factor ** i
                 for i in range(len(config.learning_rate_boundaries) + 1))


def schedule_from_values(values):
    """The checked ScheduleConfig (check_schedule) from {field name: value}, e.g. the training flags'
    values, where the two list fields may hold strings; UserError naming the flag for a non-number."""
    def numbers(name, kind):
        try:
            return tuple(kind(v) for v in values.get(name, ()))
        except ValueError:
            raise UserError(f'--{name}={",".join(map(str, values[name]))}: not a list of numbers') from None
    config = ScheduleConfig(**dict(values, learning_rate_boundaries=numbers('learning_rate_boundaries', int),
                                   learning_rate_values=numbers('learning_rate_values', float)))
    check_schedule(config)
    return config


def check_schedule(config):
    """UserError naming the flag when the schedule's values cannot work."""
    if config.learning_rate_decay_type not in DECAY_TYPES:
        raise UserError(f'--learning_rate_decay_type={config.learning_rate_decay_type}: unknown; '
                        f'use one of {", ".join(DECAY_TYPES)}')
    if config.learning_rate_values and config.learning_rate_decay_type != 'piecewise':
        raise UserError(f'--learning_rate_values: only used by --learning_rate_decay_type=piecewise, not '
                        f'{config.learning_rate_decay_type}')
    if not config.learning_rate > 0:
        raise UserError(f'--learning_rate={config.learning_rate}: must be > 0')
    if config.end_learning_rate < 0:
        raise UserError(f'--end_learning_rate={config.end_learning_rate}: must be >= 0')
    if not config.learning_rate_decay_factor > 0:
        raise UserError(f'--learning_rate_decay_factor={config.learning_rate_decay_factor}: must be > 0')
    if not config.num_epochs_per_decay > 0:
        raise UserError(f'--num_epochs_per_decay={config.num_epochs_per_decay}: must be > 0')
    if config.warmup_steps < 0:
        raise UserError(f'--warmup_steps={config.warmup_steps}: must be >= 0')
    if config.learning_rate_decay_type == 'piecewise':
        boundaries = list(config.learning_rate_boundaries)
        if not boundaries or boundaries != sorted(set(boundaries)) or boundaries[0] <= 0:
            raise UserError(f'--learning_rate_boundaries={",".join(map(str, boundaries))}: '
                            'need increasing positive steps')
        values = piecewise_values(config)
        if len(values) != len(boundaries) + 1:
            raise UserError(f'--learning_rate_values: {len(values)} values given, need '
                            f'{len(boundaries) + 1} (one more than the boundaries)')
        if min(values) <= 0:
            raise UserError('--learning_rate_values: every value must be > 0')


def learning_rate_tensor(config, global_step, decay_steps):
    """Scalar float32 learning rate at `global_step` (int64 tensor).

    exponential: lr * factor ** floor(step / decay_steps)           (staircase)
    fixed:       lr
    polynomial:  (lr - end) * (1 - min(step, D) / D) + end          (power 1, D = decay_steps)
    piecewise:   values[i] for boundaries[i-1] < step <= boundaries[i]
    cosine:      end + (lr - end) * (1 + cos(pi * min(step, D) / D)) / 2
    Then, when warmup_steps = W > 0, the rate is multiplied by min(1, (step + 1) / W) (linear warm-up).
    """
    kind = config.learning_rate_decay_type
    lr0 = config.learning_rate
    with tf.name_scope('learning_rate_schedule'):
        if kind == 'exponential':
            rate = tf.train.exponential_decay(lr0, global_step, decay_steps,
                                              config.learning_rate_decay_factor, staircase=True)
        elif kind == 'fixed':
            rate = tf.constant(lr0, tf.float32)
        elif kind in RUN_LENGTH_DECAY_TYPES:
            progress = tf.minimum(tf.cast(global_step, tf.float32), float(decay_steps)) / decay_steps
            rate = _falling_rate(config, progress, tf.cos)
        elif kind == 'piecewise':
            rate = tf.train.piecewise_constant(
                tf.cast(global_step, tf.int64), [int(b) for b in config.learning_rate_boundaries],
                [float(v) for v in piecewise_values(config)])
        else:
            raise UserError(f'--learning_rate_decay_type={kind}: unknown; use one of {", ".join(DECAY_TYPES)}')
        rate = tf.cast(rate, tf.float32)
        if config.warmup_steps > 0:
            ramp = tf.minimum(1.0, (tf.cast(global_step, tf.float32) + 1.0) / config.warmup_steps)
            rate = rate * ramp
        return tf.identity(rate, name='value')


def _falling_rate(config, progress, cos):
    """polynomial (linear) and cosine at `progress` = min(step, D) / D: a tensor with cos=tf.cos, or a number
    with cos=math.cos (the start-up report's figures)."""
    lr0, end = config.learning_rate, config.end_learning_rate
    if config.learning_rate_decay_type == 'polynomial':
        return end + (lr0 - end) * (1.0 - progress)
    return end + (lr0 - end) * 0.5 * (1.0 + cos(math.pi * progress))


def _rate_at(config, step, decay_steps):
    """The exponential, polynomial or cosine rate at `step` in Python, as learning_rate_tensor computes it."""
    if config.learning_rate_decay_type == 'exponential':
        rate = config.learning_rate * config.learning_rate_decay_factor ** (step // decay_steps)
    else:
        rate = _falling_rate(config, min(step, decay_steps) / decay_steps, math.cos)
    return rate * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else rate


def horizon_change_warning(config, decay_steps, decay_source, resumed_step, earlier_max_steps):
    """A start-up warning when a resumed run's polynomial or cosine falls over --max_number_of_steps, the run that
    saved the checkpoint (at resumed_step, past the warm-up) had the same schedule over earlier_max_steps, and the
    rate at resumed_step is now higher by over RESTART_FRACTION of the schedule's range: 'train more' after a
    finished run restarts the fall. None otherwise."""
    if (decay_source != RUN_LENGTH_SOURCE or not earlier_max_steps
            or not config.warmup_steps <= resumed_step < decay_steps):
        return None
    before, now = (_rate_at(config, resumed_step, steps) for steps in (earlier_max_steps, decay_steps))
    if now - before <= RESTART_FRACTION * (config.learning_rate - config.end_learning_rate):
        return None
    return (f'warning: resuming at step {resumed_step} with --max_number_of_steps={decay_steps}, where the run '
            f'that saved the checkpoint had {earlier_max_steps}: the {config.learning_rate_decay_type} now falls '
            f'over {decay_steps} steps, so the rate at step {resumed_step} goes back up from {before:.3g} to '
            f'{now:.3g}, a restart of its fall that can raise the loss for a while; it reaches '
            f'{config.end_learning_rate:g} at step {decay_steps}')


def period_change_warning(config, decay_steps, decay_source, resumed_step, earlier_decay_steps):
    """A start-up warning when a resumed run's decay steps, set in epochs (--num_epochs_per_decay), differ from
    those of the run that saved the checkpoint (at resumed_step) with the same schedule flags: its batch size,
    number of training samples or of synchronous replicas changed, and the exponential, polynomial or cosine
    rate jumps at resumed_step, by over RESTART_FRACTION of itself. None otherwise (an exponential resumed
    before its first decay under both also stays quiet: the start-up report's schedule line gives its steps)."""
    kind = config.learning_rate_decay_type
    if (decay_source == RUN_LENGTH_SOURCE or kind not in ('exponential',) + RUN_LENGTH_DECAY_TYPES
            or not earlier_decay_steps or earlier_decay_steps == decay_steps):
        return None
    before, now = (_rate_at(config, resumed_step, steps) for steps in (earlier_decay_steps, decay_steps))
    if abs(now - before) <= RESTART_FRACTION * before:
        return None
    epochs = config.num_epochs_per_decay * earlier_decay_steps / decay_steps
    return (f'warning: resuming at step {resumed_step}: --num_epochs_per_decay={config.num_epochs_per_decay:g} now '
            f'makes {decay_steps} decay steps, where the run that saved the checkpoint had {earlier_decay_steps} '
            f'(another --batch_size, number of training samples or of synchronous replicas), so the {kind} rate '
            f'at step {resumed_step} jumps from {before:.3g} to {now:.3g}; --num_epochs_per_decay={epochs:.3g} '
            f'keeps about the earlier {earlier_decay_steps}')


def described_decay_steps(description):
    """The decay steps in describe_schedule's text (a line of an earlier run's training_config.txt), or None."""
    found = re.search(r'(?:every|over) (\d+) steps', description)
    return int(found.group(1)) if found else None


def describe_schedule(config, decay_steps, decay_source=None):
    """One line for the start-up report; decay_source (decay_length's) says where decay_steps comes from."""
    kind = config.learning_rate_decay_type
    steps = f'{decay_steps} steps' + (f' ({decay_source})' if decay_source else '')
    text = {
        'exponential': f'exponential: {config.learning_rate:g} x {config.learning_rate_decay_factor:g} '
                       f'every {steps} (staircase)',
        'fixed': f'fixed: {config.learning_rate:g}',
        'polynomial': f'polynomial: {config.learning_rate:g} -> {config.end_learning_rate:g} linearly over {steps}',
        'piecewise': 'piecewise: ' + ', '.join(
            f'{v:g}' + (f' until step {b}' if b is not None else ' after')
            for v, b in zip(piecewise_values(config), list(config.learning_rate_boundaries) + [None])),
        'cosine': f'cosine: {config.learning_rate:g} -> {config.end_learning_rate:g} over {steps}',
    }.get(kind, kind)
    if config.warmup_steps:
        text += f', linear warm-up over the first {config.warmup_steps} steps'
    return text


def low_rate_step(config, decay_steps):
    """The global step from which the rate stays at the low end of its schedule, or None where it never gets
    there: exponential (staircase), lr * factor ** floor(step / D) <= LOW_RATE_FRACTION * lr from
    step D * ceil(log(LOW_RATE_FRACTION) / log(factor)); polynomial and cosine, their end rate from step D."""
    kind = config.learning_rate_decay_type
    if kind == 'exponential' and 0 < config.learning_rate_decay_factor < 1:
        decays = math.log(LOW_RATE_FRACTION) / math.log(config.learning_rate_decay_factor)
        return decay_steps * math.ceil(decays - 1e-9)   # an exact power lands on its own decay, not the next
    if kind in RUN_LENGTH_DECAY_TYPES and config.end_learning_rate < config.learning_rate:
        return decay_steps
    return None


def early_decay_warning(config, decay_steps, decay_source, max_number_of_steps=None):
    """A start-up warning when the rate reaches the low end of its schedule (low_rate_step) within the run's
    first EARLY_STEPS steps, and before its last (max_number_of_steps, when given); else None. It happens when
    a decay period measured in epochs is a step or a few: a small dataset at a large batch."""
    step = low_rate_step(config, decay_steps)
    horizon = min(max_number_of_steps or EARLY_STEPS, EARLY_STEPS)
    if step is None or step >= horizon:
        return None
    low = (f'{LOW_RATE_FRACTION:.0%} of --learning_rate' if config.learning_rate_decay_type == 'exponential'
           else f'--end_learning_rate={config.end_learning_rate:g}')
    return (f'warning: the learning rate is down to {low} by step {step}, as a decay period is {decay_steps} '
            f'step(s) ({decay_source}); a larger --num_epochs_per_decay, or --learning_rate_decay_type=cosine '
            f'with --max_number_of_steps, keeps it up longer')


def scratch_warmup_warning(optimizer, schedule):
    """A start-up warning for a run from scratch with Adam and no warm-up (optimizer: OptimizerConfig, schedule:
    ScheduleConfig); else None. Adam's first update moves every weight by the full rate, whatever its gradient:
    at full width that sent the loss from 25 to 3440 for a step (bench/RESULTS.md, eleventh sitting)."""
    if optimizer.optimizer != 'adam' or schedule.warmup_steps:
        return None
    return ("warning: from scratch without a warm-up: Adam's first step moves every weight by the full rate, "
            "which can send the loss into the thousands for a step; --warmup_steps=50 ramps the rate up")


def check_optimizer(config):
    """UserError for an unknown optimizer name."""
    if config.optimizer not in OPTIMIZER_NAMES:
        raise UserError(f'--optimizer={config.optimizer}: unknown; use one of {", ".join(OPTIMIZER_NAMES)}')


def make_optimizer(config, learning_rate):
    """The tf.train optimizer named by config.optimizer, with its hyper-parameters."""
    check_optimizer(config)
    name = config.optimizer
    if name == 'adadelta':
        return tf.train.AdadeltaOptimizer(learning_rate, rho=config.adadelta_rho, epsilon=config.opt_epsilon)
    if name == 'adagrad':
        return tf.train.AdagradOptimizer(
            learning_rate, initial_accumulator_value=config.adagrad_initial_accumulator_value)
    if name == 'adam':
        return tf.train.AdamOptimizer(learning_rate, beta1=config.adam_beta1, beta2=config.adam_beta2,
                                      epsilon=config.opt_epsilon)
    if name == 'ftrl':
        return tf.train.FtrlOptimizer(
            learning_rate, learning_rate_power=config.ftrl_learning_rate_power,
            initial_accumulator_value=config.ftrl_initial_accumulator_value,
            l1_regularization_strength=config.ftrl_l1, l2_regularization_strength=config.ftrl_l2)
    if name == 'momentum':
        return tf.train.MomentumOptimizer(learning_rate, momentum=config.momentum, name='Momentum')
    if name == 'rmsprop':
        return tf.train.RMSPropOptimizer(learning_rate, decay=config.rmsprop_decay,
                                         momentum=config.rmsprop_momentum, epsilon=config.opt_epsilon)
    return tf.train.GradientDescentOptimizer(learning_rate)


def describe_optimizer(config):
    """One line for the start-up report: the optimizer and the hyper-parameters it uses."""
    used = {
        'adadelta': ('adadelta_rho', 'opt_epsilon'),
        'adagrad': ('adagrad_initial_accumulator_value',),
        'adam': ('adam_beta1', 'adam_beta2', 'opt_epsilon'),
        'ftrl': ('ftrl_learning_rate_power', 'ftrl_initial_accumulator_value', 'ftrl_l1', 'ftrl_l2'),
        'momentum': ('momentum',),
        'rmsprop': ('rmsprop_decay', 'rmsprop_momentum', 'opt_epsilon'),
        'sgd': (),
    }.get(config.optimizer, ())
    return config.optimizer + ''.join(f', {key}={getattr(config, key):g}' for key in used)
