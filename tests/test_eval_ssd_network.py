"""eval_ssd_network.py end to end on three images: the run completes, the table, JSON and summaries are
well formed, errors are one line. (AP numerics are tested in test_voc_eval.py.)"""
import ast
import dataclasses
import glob
import json
import os
import shutil

import pytest
from absl import flags
from PIL import Image
import tensorflow.compat.v1 as tf

from datasets.dataset_info import DatasetInfo, write_dataset_info
from tests import inference_fixtures as fixtures
from utils import eval_plots
from utils.errors import UserError
from utils.model_config import ModelConfig

# Non-difficult boxes per class in fixtures.EVAL_IMAGES: 'box' only has a difficult one.
EXPECTED_NUM_GT = {'bottle': 3, 'can': 2, 'box': 0}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('eval')
    prefix = fixtures.make_checkpoint(str(root / 'train'))
    fixtures.make_tfrecords(str(root / 'data'))
    return {'root': root, 'prefix': prefix}


def _eval_args(setup, checkpoint_path, *extra):
    return ['eval_ssd_network.py', '--dataset_dir=%s' % (setup['root'] / 'data'),
            '--checkpoint_path=%s' % checkpoint_path, '--batch_size=2'] + list(extra)


def _eval(setup, *extra, checkpoint_path=None):
    return fixtures.run_script(_eval_args(setup, checkpoint_path or setup['root'] / 'train', *extra))


def _copy_checkpoint(source_dir, target_dir):
    """model_config.json first, then the checkpoint files, then the 'checkpoint' state file: the order
    training writes them in. Returns the new prefix."""
    target_dir.mkdir(exist_ok=True)
    shutil.copy(source_dir / 'model_config.json', target_dir)
    for path in glob.glob(str(source_dir / ('model.ckpt-%d.*' % fixtures.GLOBAL_STEP))):
        shutil.copy(path, target_dir)
    prefix = str(target_dir / ('model.ckpt-%d' % fixtures.GLOBAL_STEP))
    tf.train.update_checkpoint_state(str(target_dir), prefix)
    return prefix


@pytest.fixture(scope='module')
def evaluated(setup):
    """The evaluation with every output; results.json holds an earlier run's."""
    root = setup['root']
    (root / 'eval').mkdir()
    (root / 'eval' / 'results.json').write_text('{}')
    result = _eval(setup, '--eval_dir=%s' % (root / 'eval'), '--results_json=%s' % (root / 'eval' / 'results.json'),
                   '--plot_dir=%s' % (root / 'plots'))
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_results_json_is_well_formed(setup, evaluated):
    results = json.loads((setup['root'] / 'eval' / 'results.json').read_text())
    assert results['checkpoint_path'] == setup['prefix']
    assert results['global_step'] == fixtures.GLOBAL_STEP
    assert results['num_images'] == len(fixtures.EVAL_IMAGES)
    assert results['split'] == 'test'
    assert {key: results[key] for key in ('iou_threshold', 'remove_difficult', 'select_threshold', 'nms_threshold',
                                          'select_top_k', 'keep_top_k')} == dict(
        iou_threshold=0.5, remove_difficult=True, select_threshold=0.01, nms_threshold=0.45, select_top_k=400,
        keep_top_k=200)
    assert {name: entry['num_gt'] for name, entry in results['per_class'].items()} == EXPECTED_NUM_GT
    assert results['per_class']['box']['ap_voc07'] is None                  # no ground truth: no AP
    for name in ('bottle', 'can'):
        assert 0.0 <= results['per_class'][name]['ap_voc07'] <= 1.0
        assert 0.0 <= results['per_class'][name]['ap_voc2010'] <= 1.0
        assert 0.0 <= results['per_class'][name]['recall'] <= 1.0
    mean07 = (results['per_class']['bottle']['ap_voc07'] + results['per_class']['can']['ap_voc07']) / 2
    assert results['map_voc07'] == pytest.approx(mean07)
    assert results['num_classes_with_gt'] == 2


def test_results_json_holds_the_coco_figures(setup, evaluated):
    coco = json.loads((setup['root'] / 'eval' / 'results.json').read_text())['coco']
    assert set(coco) == {'ap', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large', 'ar100'}
    for name in ('ap', 'ap50', 'ap75', 'ar100'):
        assert 0.0 <= coco[name] <= 1.0
    assert coco['ap50'] >= coco['ap75']
    # Areas are in the images' own pixels (all boxes under 96^2): at the network's 300 x 300 some would be large.
    assert coco['ap_large'] is None


def test_coco_table_is_printed_under_the_voc_table(evaluated):
    lines = evaluated.stdout.splitlines()
    mean_row = next(i for i, line in enumerate(lines) if line.startswith('mAP '))
    assert lines[mean_row + 1].split()[:4] == ['COCO', 'AP@[.5:.95]', 'AP50', 'AP75']
    assert len(lines[mean_row + 2].split()) == 7


def test_last_line_says_what_was_written_where_and_what_was_replaced(setup, evaluated):
    root = setup['root']
    assert evaluated.stdout.strip().splitlines()[-1] == (
        f'Wrote TensorBoard summaries to {root / "eval"}, results to {root / "eval" / "results.json"} (replacing '
        f'the file that was there), 3 PNG files to {root / "plots"}')


def test_plot_dir_holds_pr_curves_of_classes_with_ground_truth_and_the_detection_grid(setup, evaluated):
    plots = setup['root'] / 'plots'
    assert sorted(path.name for path in plots.iterdir()) == ['detections.png', 'pr_bottle.png', 'pr_can.png']
    with Image.open(plots / 'pr_can.png') as curve:
        assert curve.size == (480, 400)
    with Image.open(plots / 'detections.png') as grid:   # the three test images in one row of 300 x 300 cells
        assert grid.size == (3 * 300, 300)
        colours = {colour for _, colour in grid.convert('RGB').getcolors(maxcolors=1 << 20)}
    assert eval_plots.MISSED_COLOUR in colours and (eval_plots.TP_COLOUR in colours or eval_plots.FP_COLOUR in colours)


def test_output_holds_no_tensorflow_noise(evaluated):
    fixtures.assert_no_tensorflow_noise(evaluated.stdout + evaluated.stderr)
    # The Saver's 'Restoring parameters from ...' repeats the checkpoint line of the table's header.
    assert 'INFO:tensorflow' not in evaluated.stderr and 'Restoring parameters from' not in evaluated.stderr


def test_table_is_printed(evaluated):
    lines = evaluated.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ['class', '#GT', 'AP07', 'AP10'])
    assert lines[header - 1] == ("Split 'test', IoU >= 0.5. AP07: VOC2007 11-point AP; AP10: VOC2010+ area under "
                                 "the PR curve (10: the year, not an IoU); recall: of all detections; R@0.5, P@0.5: "
                                 "recall and precision of those scoring 0.5 or more (detect.py's default "
                                 "--score_threshold)")
    assert lines[header].split()[4:] == ['recall', 'R@0.5', 'P@0.5']
    rows = [line.split() for line in lines[header + 1:header + 5]]
    assert [row[0] for row in rows] == ['bottle', 'can', 'box', 'mAP']
    assert rows[2][1:] == ['0', 'no', 'GT']
    assert '3 images' in evaluated.stdout


def test_ssd_tensorflows_evaluation_flags_run_its_commands(setup):
    """--remove_difficult=False counts 'box''s one difficult object; the resize and size it had are accepted,
    others refused in one line."""
    counted = _eval(setup, '--remove_difficult=False', '--eval_resize=4', '--eval_image_size=300',
                    '--gpu_memory_fraction=0.5')
    assert counted.returncode == 0, counted.stderr[-2000:]
    lines = counted.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ['class', '#GT'])
    assert {row.split()[0]: int(row.split()[1]) for row in lines[header + 1:header + 4]} == dict(EXPECTED_NUM_GT,
                                                                                                  box=1)
    for flag, message in (('--eval_resize=2', '--eval_resize=2: only 4 (WARP_RESIZE'),
                          ('--eval_image_size=512', '--eval_image_size=512: this network takes 300x300 inputs')):
        refused = _eval(setup, flag)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1].startswith(f'eval_ssd_network.py: error: {message}')


def test_summaries_hold_map_per_class_ap_coco_pr_curves_and_images(setup, evaluated):
    events = glob.glob(str(setup['root'] / 'eval' / 'events.out.tfevents.*'))
    assert len(events) == 1
    tags, steps = set(), set()
    for event in tf.train.summary_iterator(events[0]):
        for value in event.summary.value:
            tags.add(value.tag)
            steps.add(event.step)
    assert {'mAP/VOC07', 'mAP/VOC2010', 'AP_VOC07/bottle', 'AP_VOC2010/can', 'COCO/ap', 'COCO/ar100'} <= tags
    assert {'PR/bottle/pr_curves', 'PR/can/pr_curves'} <= tags
    assert 'AP_VOC07/box' not in tags and 'PR/box/pr_curves' not in tags
    assert any(tag.startswith('detections/image') for tag in tags)
    assert steps == {fixtures.GLOBAL_STEP}


def test_no_summary_images_writes_only_the_scalars(setup):
    eval_dir = setup['root'] / 'eval_no_images'
    result = _eval(setup, '--eval_dir=%s' % eval_dir, '--num_summary_images=0')
    assert result.returncode == 0, result.stderr[-2000:]
    events = glob.glob(str(eval_dir / 'events.out.tfevents.*'))
    tags = {value.tag for event in tf.train.summary_iterator(events[0]) for value in event.summary.value}
    assert 'mAP/VOC07' in tags
    assert not any(tag.startswith('detections/') for tag in tags)


def test_waiting_eval_builds_the_model_of_the_first_checkpoint_written(setup, tmp_path):
    """Eval starts before training has made its train_dir: that folder is watched (not its parent), and the
    model (4 classes, depth 0.125, not the VOC defaults) is read from the model_config.json that comes with the
    first checkpoint."""
    watched = tmp_path / 'train'
    process = fixtures.start_script(_eval_args(setup, watched, '--wait_for_checkpoints', '--eval_interval_secs=0',
                                               '--wait_timeout_secs=5', '--max_num_batches=1'))
    try:
        assert process.stdout.readline().startswith('Waiting for checkpoints in %s' % watched)
        prefix = _copy_checkpoint(setup['root'] / 'train', watched)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert '%s (step %d): 2 images' % (prefix, fixtures.GLOBAL_STEP) in stdout


def test_waiting_eval_stops_when_the_records_are_converted_again_with_other_classes(setup, tmp_path):
    """The first checkpoint is evaluated; the records are then converted with the classes in another order, and
    the next checkpoint is refused in one line, as at the start, rather than scored under the old names."""
    records = tmp_path / 'data'
    shutil.copytree(setup['root'] / 'data', records)
    watched = tmp_path / 'train'
    _copy_checkpoint(setup['root'] / 'train', watched)
    args = ['eval_ssd_network.py', f'--dataset_dir={records}', f'--checkpoint_path={watched}', '--batch_size=2',
            '--wait_for_checkpoints', '--eval_interval_secs=0', '--wait_timeout_secs=30', '--max_num_batches=1']
    process = fixtures.start_script(args)
    try:
        for line in process.stdout:
            if line.startswith('mAP'):           # the first checkpoint's table is out
                break
        write_dataset_info(str(records), DatasetInfo('tiny', ['none', 'can', 'bottle', 'box'],
                                                     {'test': len(fixtures.EVAL_IMAGES)}))
        for name in glob.glob(str(watched / f'model.ckpt-{fixtures.GLOBAL_STEP}.*')):
            shutil.copy(name, name.replace(f'ckpt-{fixtures.GLOBAL_STEP}.', f'ckpt-{fixtures.GLOBAL_STEP + 1}.'))
        tf.train.update_checkpoint_state(str(watched), str(watched / f'model.ckpt-{fixtures.GLOBAL_STEP + 1}'))
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1
    assert stderr.strip().splitlines()[-1] == (
        f"eval_ssd_network.py: error: --dataset_dir={records}: its classes are not those the model was trained on "
        f"(label 1 is 'can' in the dataset, 'bottle' in the model; label 2 is 'bottle' in the dataset, 'can' in the "
        f"model); evaluate on records converted "
        f"with the model's class list (tf_convert_data.py --labels_file), or evaluate a checkpoint trained on this "
        f"dataset")


def test_ssd_tensorflow_s_preprocessing_name_and_master_flags_run_or_are_one_line(setup):
    accepted = _eval(setup, '--preprocessing_name=ssd_300_vgg', '--master=', '--max_num_batches=1')
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    for flag, error in (('--preprocessing_name=inception', '--preprocessing_name=inception: no such preprocessing '
                                                           '(known: ssd_300_vgg, ssd_512_vgg)'),
                        ('--master=grpc://host:2222', '--master=grpc://host:2222: evaluation runs in this process; '
                                                      'leave the flag out')):
        refused = _eval(setup, flag)
        assert (refused.returncode, refused.stderr.strip().splitlines()[-1]) == (1, f'eval_ssd_network.py: error: {error}')


def test_a_dataset_name_other_than_the_records_is_refused_as_in_training(setup):
    result = _eval(setup, '--dataset_name=pascalvoc_2007')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"eval_ssd_network.py: error: --dataset_name=pascalvoc_2007: {setup['root'] / 'data'} holds the dataset "
        f"'tiny' (3 classes); the flag only names a built-in class list for a folder without dataset_info.json")


def test_waiting_watches_a_folder_yet_to_be_made_and_the_folder_of_a_prefix(tmp_path):
    import eval_ssd_network
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'step-60.index').write_bytes(b'')
    for path, watched in ((tmp_path / 'w1', tmp_path / 'w1'),                        # not made yet
                          (tmp_path / 'run', tmp_path / 'run'),
                          (tmp_path / 'w1' / 'model.ckpt-60', tmp_path / 'w1'),
                          (tmp_path / 'w1' / 'ssd_300_vgg.ckpt', tmp_path / 'w1'),
                          (tmp_path / 'run' / 'step-60', tmp_path / 'run')):         # an existing prefix
        assert eval_ssd_network.watched_directory(str(path)) == str(watched), path


def test_dataset_with_other_class_names_is_one_line_naming_them(setup, tmp_path):
    prefix = _copy_checkpoint(setup['root'] / 'train', tmp_path / 'train')
    config = ModelConfig.load(prefix)
    dataclasses.replace(config, class_names=('none', 'bottle', 'cup', 'box')).save(str(tmp_path / 'train'))
    result = _eval(setup, checkpoint_path=tmp_path / 'train')
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('eval_ssd_network.py: error: --dataset_dir=%s: its classes are not those the model '
                           'was trained on' % (setup['root'] / 'data'))
    assert "label 2 is 'can' in the dataset, 'cup' in the model" in last
    assert 'bottle' not in last and '--labels_file' in last


def test_model_trained_with_labels_offset_is_evaluated_on_shifted_labels(setup, tmp_path):
    """labels_offset=1: record label 1 (bottle) is dropped, 2 (can) -> 1, 3 (box) -> 2."""
    fixtures.make_checkpoint(str(tmp_path / 'train'), num_classes=3, class_names=['none', 'can', 'box'],
                             labels_offset=1)
    results_json = tmp_path / 'results.json'
    result = _eval(setup, '--results_json=%s' % results_json, checkpoint_path=tmp_path / 'train')
    assert result.returncode == 0, result.stderr[-2000:]
    per_class = json.loads(results_json.read_text())['per_class']
    assert {name: entry['num_gt'] for name, entry in per_class.items()} == {'can': 2, 'box': 0}


def test_checkpoint_of_another_network_is_one_line(setup):
    result = _eval(setup, '--depth_multiplier=0.25')
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('eval_ssd_network.py: error: %s: does not fit the network' % setup['prefix'])


def test_missing_split_is_one_line(setup):
    result = _eval(setup, '--dataset_split_name=validation')
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('eval_ssd_network.py: error: ') and "split 'validation'" in last


def test_max_num_batches_must_be_positive():
    import eval_ssd_network   # defines its flags on absl's global FLAGS, which no other test module uses
    fv = flags.FLAGS
    fv(['eval_ssd_network.py', '--dataset_dir=d', '--checkpoint_path=c', '--max_num_batches=0'])
    try:
        with pytest.raises(UserError, match=r'--max_num_batches=0: must be >= 1'):
            eval_ssd_network.reader_from_flags(fv)
    finally:
        fv.unparse_flags()


@pytest.mark.parametrize('arg, message', [
    ('--matching_threshold=1.5', '--matching_threshold=1.5: must be in (0, 1]'),
    ('--matching_threshold=0', '--matching_threshold=0: must be in (0, 1]'),
    ('--num_summary_images=-1', '--num_summary_images=-1: must be >= 0 (0: none)')])
def test_evaluation_flags_that_cannot_work_are_one_line(arg, message):
    import eval_ssd_network
    fv = flags.FLAGS
    fv(['eval_ssd_network.py', '--dataset_dir=d', '--checkpoint_path=c', arg])
    try:
        with pytest.raises(UserError) as raised:
            eval_ssd_network.check_eval_flags(fv)
        assert str(raised.value).startswith(message)
    finally:
        fv.unparse_flags()


@pytest.mark.parametrize('script', ['eval_ssd_network.py', 'train_ssd_network.py'])
def test_usage_example_keeps_its_line_break(script):
    """A backslash at the end of a docstring line must be escaped, or --help joins the two lines."""
    with open(os.path.join(fixtures.REPO_ROOT, script)) as source:
        docstring = ast.get_docstring(ast.parse(source.read()))
    assert '\\\n' in docstring


def test_a_class_count_that_differs_names_what_helps():
    import eval_ssd_network
    from datasets.dataset_info import DatasetInfo
    five = DatasetInfo('shop', ['none', 'a', 'b', 'c', 'd'], {'test': 1})
    model = ModelConfig(num_classes=4, class_names=('none', 'a', 'b', 'c'))
    prefix = "--dataset_dir=d: the dataset has 5 classes with the background, the model 4; "
    for saved, advice in ((None, 'a checkpoint of 5 classes without model_config.json takes --num_classes=5; '
                                 'else evaluate the records it was trained on'),
                          (4, 'evaluate the records it was trained on, or a checkpoint trained on this dataset'),
                          (3, 'its model_config.json says 3: leave --num_classes out')):
        with pytest.raises(UserError) as raised:
            eval_ssd_network.model_class_names(model, five, 'd', saved)
        assert str(raised.value) == prefix + advice
