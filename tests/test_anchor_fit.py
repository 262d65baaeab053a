"""nets/anchor_fit.py (best possible recall, fitted anchor sizes), utils/anchor_report.py (the warning), and
--anchor_sizes from the flags through model_config.json to the inference tools' networks."""
import io
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

from datasets import demo_drawing, split_boxes
from nets import anchor_fit, anchors, nets_factory
from nets.ssd_params import SSDParams
from preprocessing import ssd_vgg_preprocessing
from tests import train_fixtures
from utils import anchor_report, model_config, startup_report, train_plan
from utils.errors import UserError

SSD300 = nets_factory.get_network('ssd_300_vgg', 2).params
SSD512 = nets_factory.get_network('ssd_512_vgg', 2).params
DEFAULT_300 = (21., 45., 99., 153., 207., 261., 315.)


def _px_box(cy, cx, h, w, size=100.):
    """Normalised yxyx of a box given by its centre and sides in pixels of a size x size image."""
    return [(cy - h / 2) / size, (cx - w / 2) / size, (cy + h / 2) / size, (cx + w / 2) / size]


# One layer of 2 x 2 cells (step 50 px in a 100 x 100 input), centres at 25 and 75 px; two square anchors
# per cell, both 20 px (s_0 = s_1 = 20, so sqrt(s_0 * s_1) = 20 too), no ratios.
TOY = SSDParams(img_shape=(100, 100), num_classes=2, feat_layers=('only',), feat_shapes=((2, 2),),
                anchor_sizes=((20., 20.),), anchor_ratios=((),), anchor_steps=(50,), anchor_offset=0.5,
                normalizations=(-1,), prior_scaling=(0.1, 0.1, 0.2, 0.2))
TOY_BOXES = np.array([
    _px_box(25, 25, 20, 20),   # an anchor exactly: IoU 1
    _px_box(35, 25, 20, 20),   # 10 px below one: overlap 10 x 20 = 200, union 400 + 400 - 200 -> 1/3
    _px_box(75, 75, 10, 10),   # inside one: 100 / 400 = 0.25
    _px_box(25, 75, 30, 30),   # one inside it: 400 / 900 = 4/9
])
TOY_IOUS = np.array([1., 1. / 3, 0.25, 4. / 9])


def test_best_ious_and_bpr_of_a_hand_computed_case():
    np.testing.assert_allclose(anchor_fit.best_ious(TOY_BOXES, TOY), TOY_IOUS, rtol=1e-9)
    fit = anchor_fit.anchor_fit(TOY_BOXES, TOY, 0.5)
    assert (fit.num_boxes, fit.bpr) == (4, 0.25)
    assert fit.median_iou == pytest.approx((1. / 3 + 4. / 9) / 2)
    assert anchor_fit.anchor_fit(TOY_BOXES, TOY, 0.4).bpr == 0.5     # 1 and 4/9
    assert anchor_fit.anchor_fit(TOY_BOXES, TOY, 0.3).bpr == 0.75    # and 1/3


def _random_boxes(rng, count, low, high):
    """Boxes with sides log-uniform in [low, high] of the image, aspect ratios around 1, inside the image."""
    side = np.exp(rng.uniform(np.log(low), np.log(high), count))
    aspect = np.exp(rng.normal(0, 0.5, count))
    h, w = np.minimum(side / np.sqrt(aspect), 1), np.minimum(side * np.sqrt(aspect), 1)
    cy, cx = rng.uniform(h / 2, 1 - h / 2), rng.uniform(w / 2, 1 - w / 2)
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)


def _brute_force_best_ious(boxes, params):
    """IoU of every box with every anchor of the network (anchors.py), the maximum per box."""
    cy, cx, h, w = anchors.ssd_anchors(params).astype(np.float64).T
    ymin, xmin, ymax, xmax = (boxes[:, i:i + 1] for i in range(4))
    inter_h = np.maximum(np.minimum(ymax, cy + h / 2) - np.maximum(ymin, cy - h / 2), 0)
    inter_w = np.maximum(np.minimum(xmax, cx + w / 2) - np.maximum(xmin, cx - w / 2), 0)
    inter = inter_h * inter_w
    return np.max(inter / ((ymax - ymin) * (xmax - xmin) + h * w - inter), axis=1)


@pytest.mark.parametrize('params', [SSD300, SSD512], ids=['ssd300', 'ssd512'])
def test_nearest_cell_equals_every_anchor(params):
    boxes = _random_boxes(np.random.default_rng(0), 500, 0.01, 1.0)
    np.testing.assert_allclose(anchor_fit.best_ious(boxes, params), _brute_force_best_ious(boxes, params),
                               atol=2e-6)  # anchors.py stores float32


def test_auto_sizes_raise_bpr_on_small_boxes():
    boxes = _random_boxes(np.random.default_rng(1), 3000, 8 / 300, 25 / 300)
    sizes = anchor_report.fitted_sizes(boxes, SSD300, 0.5)
    default = anchor_fit.anchor_fit(boxes, SSD300, 0.5).bpr
    fitted = anchor_fit.anchor_fit(boxes, anchor_fit.with_sizes(SSD300, sizes), 0.5).bpr
    assert fitted > default + 0.15, (default, fitted, sizes)
    assert sizes[0] < DEFAULT_300[0] and list(sizes) == sorted(sizes)


def test_auto_sizes_stay_close_to_the_defaults_on_voc_like_boxes():
    rng = np.random.default_rng(2)
    # VOC's boxes: sides from a few per cent of the image to all of it, median about 0.3.
    boxes = _random_boxes(rng, 3000, 0.04, 1.0)
    boxes = boxes[np.abs(np.log(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) / 0.3)) < 1.5]
    sizes = anchor_report.fitted_sizes(boxes, SSD300, 0.5)
    np.testing.assert_allclose(sizes, DEFAULT_300, rtol=0.25)
    assert (anchor_fit.anchor_fit(boxes, anchor_fit.with_sizes(SSD300, sizes), 0.5).bpr
            >= anchor_fit.anchor_fit(boxes, SSD300, 0.5).bpr)


def test_zoom_samples_follow_the_augmentation_recipe():
    zooms = ssd_vgg_preprocessing.sample_box_zooms(np.random.default_rng(0), 200000)
    # Extremes: expand r = 4 on the whole canvas (1/4); the smallest crop side 0.3 / sqrt(2) (aspect 2), no expand.
    assert zooms.min() >= 0.25 - 1e-9 and zooms.max() <= np.sqrt(2) / 0.3 + 1e-9
    unchanged = np.mean(np.all(zooms == 1., axis=1))   # no expand (1/2), whole canvas (1 of 7 samplers)
    assert unchanged == pytest.approx(0.5 / 7, abs=0.004)
    assert np.mean(np.all(zooms < 1., axis=1)) > 0.1 and np.mean(np.all(zooms > 1., axis=1)) > 0.3


def test_zoomed_boxes_keep_the_zoomed_sides_inside_the_image():
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, 1000, 0.05, 0.5)
    zooms = rng.uniform(0.25, 4, (1000, 2))
    zoomed = anchor_fit.zoomed_boxes(boxes, zooms, rng)
    np.testing.assert_allclose(zoomed[:, 2] - zoomed[:, 0], np.minimum((boxes[:, 2] - boxes[:, 0]) * zooms[:, 0], 1))
    np.testing.assert_allclose(zoomed[:, 3] - zoomed[:, 1], np.minimum((boxes[:, 3] - boxes[:, 1]) * zooms[:, 1], 1))
    assert zoomed.min() >= -1e-12 and zoomed.max() <= 1 + 1e-12


def _style_boxes(style, count, seed=0):
    """Normalised boxes of `count` demo images of a demo_drawing style."""
    boxes = []
    for index in range(count):
        image, objects = demo_drawing.render_image(np.random.default_rng([seed, index]), style)
        height, width = image.shape[:2]
        boxes += [[(o['ymin'] - 1) / height, (o['xmin'] - 1) / width, o['ymax'] / height, o['xmax'] / width]
                  for o in objects]
    return np.array(boxes)


def test_warning_for_small_objects_not_for_the_demo_data():
    small_boxes = _style_boxes(demo_drawing.STYLES['small_objects'], 6)
    small = anchor_report.fit_lines(small_boxes, 'ssd_300_vgg', SSD300, 0.5)
    assert any('WARNING' in line for line in small)
    options = [line.strip() for line in small if line.strip().startswith('--')]
    assert options and any(line.startswith('--anchor_sizes=auto') for line in options)
    assert any(line.startswith('--model_name=ssd_512_vgg') for line in options)
    bprs = [float(line.rsplit('BPR ', 1)[1]) for line in options]
    assert bprs == sorted(bprs, reverse=True)
    demo = anchor_report.fit_lines(_style_boxes(demo_drawing.STYLES['demo'], 40), 'ssd_300_vgg', SSD300, 0.5)
    assert len(demo) == 2 and not any('WARNING' in line for line in demo)
    assert 'best possible recall' in demo[0] and 'median' in demo[1]


def test_explicit_sizes_are_checked_against_the_model():
    fv = train_fixtures.parse_flags(['--anchor_sizes=10,20,30'])
    with pytest.raises(UserError, match=r'--anchor_sizes=.*ssd_300_vgg takes 7 sizes'):
        train_fixtures.train_ssd_network.config_from_flags(fv)
    fv = train_fixtures.parse_flags(['--anchor_sizes=10,20,x'])
    with pytest.raises(UserError, match='--anchor_sizes=10,20,x: give auto or comma-separated sizes'):
        train_fixtures.train_ssd_network.config_from_flags(fv)
    fv = train_fixtures.parse_flags(['--anchor_sizes=10,20,30,40,50,45,60'])
    with pytest.raises(UserError, match='must not decrease'):
        train_fixtures.train_ssd_network.config_from_flags(fv)


@pytest.fixture(scope='module')
def small_records(tmp_path_factory):
    """A converted small-object demo dataset (crowded 300 x 300 images)."""
    from datasets import dataset_info, demo_dataset
    from datasets.voc_to_tfrecords import ConversionOptions, convert_voc_dataset
    root = tmp_path_factory.mktemp('small')
    images, records = str(root / 'images'), str(root / 'records')
    demo_dataset.generate_demo_dataset(images, seed=0, num_train=6, num_test=2,
                                       style=demo_drawing.STYLES['small_objects'])
    class_names = dataset_info.read_labels_file(os.path.join(images, 'labels.txt'))
    convert_voc_dataset(images, records, ConversionOptions(dataset_name='small', class_names=class_names),
                        log_fn=lambda *_: None)
    return records


def test_split_boxes_reads_the_records_back(small_records, tmp_path):
    from datasets import dataset_info
    paths = dataset_info.list_shards(small_records, 'train')
    boxes, records, decoded_bytes = split_boxes.split_boxes(paths, 6)
    assert records == 6 and boxes.shape[1] == 4 and len(boxes) >= 6 * 10
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    sample, read, estimated_bytes = split_boxes.split_boxes(paths, 6, max_records=3)
    assert read == 3 and len(sample) < len(boxes)
    labels = np.concatenate([tf.train.Example.FromString(record).features.feature['image/object/bbox/label']
                             .int64_list.value for path in paths for record in tf.io.tf_record_iterator(path)])
    kept = split_boxes.split_boxes(paths, 6, labels_offset=1).boxes    # class 1's boxes are not trained
    assert len(labels) == len(boxes) and len(kept) == np.sum(labels > 1) and 0 < len(kept) < len(boxes)
    # The decoded size, against the images themselves decoded: exact when every record is read, scaled from
    # the records read (the first of each shard) when they are a sample.
    sizes = [[3 * np.prod(Image.open(io.BytesIO(tf.train.Example.FromString(record).features
                                                .feature['image/encoded'].bytes_list.value[0])).size)
              for record in tf.io.tf_record_iterator(path)] for path in paths]
    assert decoded_bytes == sum(map(sum, sizes))
    per_shard = max(1, 3 // len(paths))
    assert estimated_bytes == sum(sum(shard[:per_shard]) for shard in sizes) * 6 // 3
    unsized = tf.train.Example.FromString(next(tf.io.tf_record_iterator(paths[0])))
    del unsized.features.feature['image/width']      # records that do not give their image's size
    path = str(tmp_path / 'unsized.tfrecord')
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(unsized.SerializeToString())
    assert split_boxes.split_boxes([path], 1).decoded_bytes is None


def test_auto_sizes_train_and_reach_every_inference_tool(small_records, tmp_path):
    train_dir = str(tmp_path / 'train')
    args = [f'--dataset_dir={small_records}', f'--train_dir={train_dir}', f'--pretrained_path={tmp_path}',
            '--max_number_of_steps=2', '--anchor_sizes=auto', '--save_summaries_secs=0'] + train_fixtures.SMALL
    plan = train_fixtures.plan_from_flags(train_fixtures.parse_flags(args))
    sizes = plan.model.anchor_sizes
    assert len(sizes) == 7 and sizes[0] < DEFAULT_300[0]
    report = startup_report.training_report(plan)
    assert (f'anchor sizes fitted to the training boxes (--anchor_sizes=auto: --anchor_sizes='
            f'{",".join(f"{s:g}" for s in sizes)})') in report
    boxes = split_boxes.split_boxes(plan.shards, plan.num_samples).boxes
    fitted, builtin = (anchor_fit.anchor_fit(boxes, params, 0.5).bpr
                       for params in (anchor_fit.with_sizes(SSD300, sizes), SSD300))
    assert f'best possible recall {fitted:.3f} (the built-in sizes: {builtin:.3f})' in report
    assert f'sizes {sizes[0]:g},{sizes[1]:g} px' in report and 'best possible recall' in report
    train_fixtures.train_ssd_network.train(plan, train_fixtures.StopRequest())
    saved = json.loads(open(os.path.join(train_dir, model_config.CONFIG_FILENAME)).read())
    assert saved['anchor_sizes'] == list(sizes)
    # eval, detect and both exports build their network from inference_config.
    config = model_config.inference_config(os.path.join(train_dir, 'model.ckpt-2'), {})
    assert config.anchor_sizes == sizes
    first = config.build_network().anchors[0]   # block4, cell (0, 0), the s_0 square: centre 4 px of 300
    np.testing.assert_allclose(first, [4 / 300, 4 / 300, sizes[0] / 300, sizes[0] / 300], rtol=1e-6)
    # Resuming with auto keeps the sizes it began with; without the flag the run is refused, naming them.
    resumed = train_fixtures.plan_from_flags(train_fixtures.parse_flags(
        [a.replace('--max_number_of_steps=2', '--max_number_of_steps=3') for a in args]))
    assert resumed.model.anchor_sizes == sizes
    with pytest.raises(UserError, match=r"-> ssd_tensorflow's\); resume with --anchor_sizes=" +
                       ','.join(f'{s:g}' for s in sizes)):
        train_fixtures.plan_from_flags(train_fixtures.parse_flags([a for a in args if 'anchor_sizes' not in a]))


def test_auto_on_resume_of_a_default_anchor_run_is_refused(tmp_path):
    train_dir = str(tmp_path)
    model_config.ModelConfig(class_names=('none',) + ('c',) * 20).save(train_dir)
    with pytest.raises(UserError, match='--anchor_sizes=auto: the checkpoints in --train_dir=.* were trained with '
                                        'the ssd_tensorflow anchor sizes'):
        train_plan._resumed_anchor_sizes(model_config.ModelConfig(), train_dir)


def test_a_record_whose_box_lists_differ_names_the_shard_and_record(tmp_path):
    import tensorflow.compat.v1 as tf
    path = str(tmp_path / 'x_train_000.tfrecord')
    feature = {'image/object/bbox/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2])),
               'image/object/bbox/ymin': tf.train.Feature(float_list=tf.train.FloatList(value=[0.1]))}
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(UserError, match=r'x_train_000.tfrecord: record 0 lists 2 labels but 1/0/0/0 box coordinates'):
        split_boxes.split_boxes([path], 1)
