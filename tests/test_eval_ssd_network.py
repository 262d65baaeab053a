"""eval_ssd_network.py end to end on three images: the run completes, the table, JSON and summaries are
well formed, errors are one line. (AP numerics are tested in test_voc_eval.py.)"""
import glob
import json

import pytest
import tensorflow.compat.v1 as tf

from tests import inference_fixtures as fixtures

# Non-difficult boxes per class in fixtures.EVAL_IMAGES: 'box' only has a difficult one.
EXPECTED_NUM_GT = {'bottle': 3, 'can': 2, 'box': 0}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('eval')
    prefix = fixtures.make_checkpoint(str(root / 'train'))
    fixtures.make_tfrecords(str(root / 'data'))
    return {'root': root, 'prefix': prefix}


def _eval(setup, *extra):
    root = setup['root']
    return fixtures.run_script(['eval_ssd_network.py', '--dataset_dir=%s' % (root / 'data'),
                                '--checkpoint_path=%s' % (root / 'train'), '--batch_size=2'] + list(extra))


@pytest.fixture(scope='module')
def evaluated(setup):
    root = setup['root']
    result = _eval(setup, '--eval_dir=%s' % (root / 'eval'), '--results_json=%s' % (root / 'eval' / 'results.json'))
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_results_json_is_well_formed(setup, evaluated):
    results = json.loads((setup['root'] / 'eval' / 'results.json').read_text())
    assert results['checkpoint_path'] == setup['prefix']
    assert results['global_step'] == fixtures.GLOBAL_STEP
    assert results['num_images'] == len(fixtures.EVAL_IMAGES)
    assert results['split'] == 'test'
    assert {name: entry['num_gt'] for name, entry in results['per_class'].items()} == EXPECTED_NUM_GT
    assert results['per_class']['box']['ap_voc07'] is None                  # no ground truth: no AP
    for name in ('bottle', 'can'):
        assert 0.0 <= results['per_class'][name]['ap_voc07'] <= 1.0
        assert 0.0 <= results['per_class'][name]['ap_voc2010'] <= 1.0
    mean07 = (results['per_class']['bottle']['ap_voc07'] + results['per_class']['can']['ap_voc07']) / 2
    assert results['map_voc07'] == pytest.approx(mean07)
    assert results['num_classes_with_gt'] == 2


def test_table_is_printed(evaluated):
    lines = evaluated.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ['class', '#GT', 'AP07', 'AP10'])
    rows = [line.split() for line in lines[header + 1:header + 5]]
    assert [row[0] for row in rows] == ['bottle', 'can', 'box', 'mAP']
    assert rows[2][1:] == ['0', 'no', 'GT']
    assert '3 images' in evaluated.stdout


def test_summaries_hold_map_per_class_ap_and_images(setup, evaluated):
    events = glob.glob(str(setup['root'] / 'eval' / 'events.out.tfevents.*'))
    assert len(events) == 1
    tags, steps = set(), set()
    for event in tf.train.summary_iterator(events[0]):
        for value in event.summary.value:
            tags.add(value.tag)
            steps.add(event.step)
    assert {'mAP/VOC07', 'mAP/VOC2010', 'AP_VOC07/bottle', 'AP_VOC2010/can'} <= tags
    assert 'AP_VOC07/box' not in tags
    assert any(tag.startswith('detections/image') for tag in tags)
    assert steps == {fixtures.GLOBAL_STEP}


def test_wait_for_checkpoints_evaluates_then_stops_at_timeout(setup):
    result = _eval(setup, '--wait_for_checkpoints', '--eval_interval_secs=0', '--wait_timeout_secs=1',
                   '--max_num_batches=1')
    assert result.returncode == 0, result.stderr[-2000:]
    assert '%s (step %d): 2 images' % (setup['prefix'], fixtures.GLOBAL_STEP) in result.stdout


def test_checkpoint_of_another_network_is_one_line(setup):
    result = _eval(setup, '--depth_multiplier=0.25')
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('eval_ssd_network.py: error: %s: does not fit the network' % setup['prefix'])


def test_missing_split_is_one_line(setup):
    result = _eval(setup, '--dataset_split_name=validation')
    assert result.returncode == 1
    assert "no TFRecord shards for split 'validation'" in result.stderr.strip().splitlines()[-1]
