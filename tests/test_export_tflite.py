"""deployment/export_tflite.py: the model runs in the standard TFLite runtime with TFLite_Detection_PostProcess
(no Flex op), the op decodes as nets/box_coder.py, the float model detects what the checkpoint detects, int8
keeps a trained model's mAP. Conversions run in subprocesses: the converter needs eager execution, these
tests run in graph mode (conftest)."""
import json
import os
import textwrap

import numpy as np
import pytest
from PIL import Image
import tensorflow.compat.v1 as tf

from deployment import tflite_model
from nets import box_coder
from nets.ssd_params import PRIOR_SCALING
from tests import inference_fixtures as fixtures
from utils import tflite_detector
from utils.model_config import ModelConfig

IMAGE_SIDE = 300   # the network's input size: resize_for_eval leaves these images as they are


def _export(checkpoint_path, output_file, *extra):
    result = fixtures.run_script(['deployment/export_tflite.py', f'--checkpoint_path={checkpoint_path}',
                                  f'--output_file={output_file}'] + list(extra), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('tflite')
    prefix = fixtures.make_checkpoint(str(root / 'train'))
    fixtures.make_tfrecords(str(root / 'data'))
    result = _export(root / 'train', root / 'model.tflite')
    return {'root': root, 'prefix': prefix, 'model': str(root / 'model.tflite'), 'result': result}


def _op_names(model_path):
    return {op['op_name'] for op in tf.lite.Interpreter(model_path=model_path)._get_ops_details()}


def test_model_holds_the_postprocess_op_with_the_checkpoint_s_settings_and_no_flex_op(exported):
    assert 'TFLite model written to %s' % exported['model'] in exported['result'].stdout
    fixtures.assert_no_tensorflow_noise(exported['result'].stdout + exported['result'].stderr)
    names = _op_names(exported['model'])
    assert tflite_model.POSTPROCESS_OP in names and not any(name.startswith('Flex') for name in names)
    with open(exported['model'], 'rb') as model:
        attributes = tflite_model.attributes_of(model.read())
    assert attributes == pytest.approx({
        'max_detections': 200, 'detections_per_class': 200, 'max_classes_per_detection': 1, 'use_regular_nms': 1,
        'nms_score_threshold': 0.01, 'nms_iou_threshold': 0.45, 'num_classes': 3,
        'y_scale': 10.0, 'x_scale': 10.0, 'h_scale': 5.0, 'w_scale': 5.0})
    assert tflite_detector.read_class_names(exported['model']) == fixtures.CLASS_NAMES


def test_float_model_detects_what_the_checkpoint_detects(exported):
    """Boxes and scores within 1e-3, same classes, all keep_top_k=200 of them. The in-process model's per-class
    top-k before NMS is set to every anchor, as TFLite_Detection_PostProcess has none."""
    config = ModelConfig.load(exported['prefix'])
    images = [fixtures.make_image(IMAGE_SIDE, IMAGE_SIDE, seed) for seed in range(3)]
    options = dict(score_threshold=0.01, nms_threshold=0.45, top_k=len(config.build_network().anchors),
                   keep_top_k=200)
    expected = fixtures.reference_detections(exported['prefix'], [fixtures.encode(image, 'PNG') for image in images],
                                             config, options)
    detector = tflite_detector.TFLiteDetector(exported['model'])
    for image, reference in zip(images, expected):
        found = detector.detect(image[None].astype(np.float32))
        count = int(found['num_detections'][0])
        assert count == len(reference['scores']) == 200
        fixtures.assert_same_detections(reference, found['detection_boxes'][0, :count],
                                        found['detection_scores'][0, :count], found['detection_classes'][0, :count],
                                        atol=1e-3)


_POSTPROCESS_ONLY = textwrap.dedent('''\
    import sys
    import numpy as np
    import tensorflow as tf
    from deployment import tflite_model
    from nets.ssd_params import PRIOR_SCALING
    anchors = np.load(sys.argv[1])
    attributes = tflite_model.postprocess_attributes(2, PRIOR_SCALING, dict(
        score_threshold=0.0, nms_threshold=1.0, keep_top_k=len(anchors)))   # IoU > 1 never: nothing suppressed
    postprocess = tflite_model.postprocess_function(attributes)
    module = tf.Module()
    module.detect = tf.function(
        lambda box_encodings, class_scores: dict(zip(tflite_model.OUTPUT_NAMES, postprocess(
            box_encodings, class_scores, tf.constant(anchors)))),
        input_signature=[tf.TensorSpec([1, len(anchors), 4], tf.float32, name='box_encodings'),
                         tf.TensorSpec([1, len(anchors), 2], tf.float32, name='class_scores')])
    with open(sys.argv[2], 'wb') as out:
        out.write(tflite_model.convert(module))
    ''')


def test_postprocess_op_decodes_boxes_as_box_coder(tmp_path):
    """TFLite_Detection_PostProcess with y/x/h/w_scale = 1 / prior_scaling and anchors (cy, cx, h, w) gives
    box_coder.decode's boxes."""
    rng = np.random.default_rng(0)
    num_anchors = 40
    anchors = np.concatenate([rng.uniform(0.2, 0.8, (num_anchors, 2)), rng.uniform(0.05, 0.4, (num_anchors, 2))],
                             axis=1).astype(np.float32)
    encodings = rng.normal(0, 1, (1, num_anchors, 4)).astype(np.float32)
    scores = np.linspace(0.9, 0.1, num_anchors, dtype=np.float32)     # detection i is anchor i
    np.save(tmp_path / 'anchors.npy', anchors)
    result = fixtures.run_script(['-c', _POSTPROCESS_ONLY, str(tmp_path / 'anchors.npy'), str(tmp_path / 'pp.tflite')])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tf.lite.Interpreter(model_path=str(tmp_path / 'pp.tflite')).get_signature_runner()
    found = run(box_encodings=encodings, class_scores=np.stack([1 - scores, scores], axis=-1)[None])
    with tf.Graph().as_default(), tf.Session() as session:
        expected = session.run(box_coder.decode(encodings, anchors, PRIOR_SCALING))
    assert int(found['num_detections'][0]) == num_anchors
    np.testing.assert_allclose(found['detection_scores'][0], scores, rtol=1e-6)
    np.testing.assert_allclose(found['detection_boxes'][0], expected[0], atol=1e-5)


_CALIBRATED_RANGES = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    from deployment import tflite_model
    from tensorflow.lite.tools import flatbuffer_utils
    images = list(np.load(sys.argv[1])[:, None])
    module = tf.Module()
    module.run = tf.function(lambda x: tf.nn.relu(x - 100.0) * 0.5,
                             input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)])
    converter = lambda: tf.lite.TFLiteConverter.from_concrete_functions([module.run.get_concrete_function()], module)
    calibrating = converter()
    calibrating.optimizations = [tf.lite.Optimize.DEFAULT]
    calibrating.representative_dataset = lambda: ([image] for image in images)
    calibrating._experimental_calibrate_only = True
    graph = flatbuffer_utils.read_model_from_bytearray(
        bytearray(tflite_model.with_mean_ranges(calibrating.convert(), images))).subgraphs[0]
    ranges = lambda index: [float(graph.tensors[index].quantization.min[0]),
                            float(graph.tensors[index].quantization.max[0])]
    # The int8 model: its last int8 tensor is what DEQUANTIZE turns into the float output.
    quantized = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model.quantized_int8(converter(), images)))
    last = quantized.subgraphs[0].operators[-1]
    scale = float(quantized.subgraphs[0].tensors[last.inputs[0]].quantization.scale[0])
    print(json.dumps({'input': ranges(graph.inputs[0]), 'output': ranges(graph.outputs[0]), 'int8_scale': scale}))
    ''')


def test_int8_activation_ranges_are_the_mean_of_each_image_s_range(tmp_path):
    """y = 0.5 relu(x - 100) on three images of pixels up to 50, 150 and 250: y's range is the mean of the
    per-image ranges, [0, (0 + 25 + 75) / 3], not [0, 75], and the int8 model's step for y is that range / 255;
    the input keeps its full range [0, 250]."""
    images = np.stack([np.linspace(0, top, 48, dtype=np.float32).reshape(4, 4, 3) for top in (50, 150, 250)])
    np.save(tmp_path / 'images.npy', images)
    result = fixtures.run_script(['-c', _CALIBRATED_RANGES, str(tmp_path / 'images.npy')])
    assert result.returncode == 0, result.stderr[-3000:]
    ranges = json.loads(result.stdout.strip().splitlines()[-1])
    per_image_max = [0.5 * max(image.max() - 100, 0) for image in images]
    assert ranges['output'] == pytest.approx([0.0, np.mean(per_image_max)], abs=1e-4)
    assert ranges['input'] == pytest.approx([0.0, 250.0])
    assert ranges['int8_scale'] == pytest.approx(np.mean(per_image_max) / 255, rel=1e-3)


def test_float16_and_int8_models_run_and_are_smaller(exported):
    root = exported['root']
    _export(root / 'train', root / 'half.tflite', '--quantize=float16')
    int8 = _export(root / 'train', root / 'int8.tflite', '--quantize=int8', f'--dataset_dir={root / "data"}',
                   '--calibration_split=test')
    fixtures.assert_no_tensorflow_noise(int8.stdout + int8.stderr)
    assert 'fully_quantize' not in int8.stderr     # the quantizer's C++ status line
    size = os.path.getsize(exported['model'])
    assert os.path.getsize(root / 'half.tflite') < 0.6 * size and os.path.getsize(root / 'int8.tflite') < 0.4 * size
    for name in ('half.tflite', 'int8.tflite'):
        assert tflite_model.POSTPROCESS_OP in _op_names(str(root / name))
        found = tflite_detector.TFLiteDetector(str(root / name)).detect(
            fixtures.make_image(IMAGE_SIDE, IMAGE_SIDE, 0)[None].astype(np.float32))
        assert found['num_detections'][0] > 0 and set(found['detection_classes'][0]) <= {0, 1, 2, 3}


def test_detect_runs_the_tflite_model_as_it_runs_the_checkpoint(exported, tmp_path):
    image = tmp_path / 'shelf.png'
    image.write_bytes(fixtures.encode(fixtures.make_image(240, 320, 5), 'PNG'))
    lines = {}
    for source in (f'--model={exported["model"]}', f'--checkpoint_path={exported["prefix"]}'):
        result = fixtures.run_script(['detect.py', source, f'--images={image}', f'--output_dir={tmp_path / "out"}'])
        assert result.returncode == 0, result.stderr[-2000:]
        assert 'INFO:' not in result.stderr    # the TFLite runtime's delegate notice is held back
        lines[source.split('=')[0]] = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines['--model']) == len(lines['--checkpoint_path']) > 0
    top_tflite, top_checkpoint = lines['--model'][0], lines['--checkpoint_path'][0]
    assert top_tflite['class'] == top_checkpoint['class']
    assert top_tflite['score'] == pytest.approx(top_checkpoint['score'], abs=1e-3)


@pytest.mark.parametrize('sources, message', [
    (['--model=missing.tflite'], '--model=missing.tflite: no such file'),
    (['--model=missing.tflite', '--checkpoint_path=ckpt'], 'give one of --checkpoint_path'),
    ([], 'give one of --checkpoint_path'),
])
def test_detect_model_errors_are_one_line(tmp_path, sources, message):
    result = fixtures.run_script(['detect.py', f'--images={tmp_path / "none.png"}', f'--output_dir={tmp_path}'] + sources)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f'detect.py: error: {message}')


@pytest.mark.parametrize('extra, message', [
    (['--quantize=int8'], '--quantize=int8 needs --dataset_dir'),
    (['--select_top_k=100'], '--select_top_k: TFLite_Detection_PostProcess has no per-class top-k'),
    (['--data_format=NCHW'], '--data_format=NCHW: TFLite models are NHWC'),
])
def test_flags_the_model_cannot_honour_are_one_line(exported, tmp_path, extra, message):
    result = fixtures.run_script(['deployment/export_tflite.py', f'--checkpoint_path={exported["prefix"]}',
                                  f'--output_file={tmp_path / "m.tflite"}'] + extra)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f'export_tflite.py: error: {message}')
    assert not os.path.exists(tmp_path / 'm.tflite')


def _evaluate(dataset_dir, tmp_path, *model_args):
    """results.json of eval_ssd_network.py on the test split, for --model=... or --checkpoint_path=..."""
    results = tmp_path / ('results-%d.json' % len(list(tmp_path.glob('results-*.json'))))
    result = fixtures.run_script(['eval_ssd_network.py', f'--dataset_dir={dataset_dir}', f'--results_json={results}',
                                  '--batch_size=2'] + list(model_args), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(results.read_text())


def test_eval_of_the_float_model_gives_the_checkpoint_s_figures(exported, tmp_path):
    """The same detections (within 1e-3) give the same counts and AP; the checkpoint's top-k set to every anchor,
    as the TFLite op has no top-k before its NMS. The random weights hit boxes only at a low IoU threshold."""
    data = exported['root'] / 'data'
    of_model = _evaluate(data, tmp_path, f'--model={exported["model"]}', '--plot_dir=%s' % (tmp_path / 'plots'),
                         '--matching_threshold=0.1')
    of_checkpoint = _evaluate(data, tmp_path, f'--checkpoint_path={exported["prefix"]}', '--select_top_k=8732',
                              '--matching_threshold=0.1')
    assert of_model['model'] == exported['model'] and of_model['global_step'] is None
    assert 'checkpoint_path' not in of_model and of_checkpoint['checkpoint_path'] == exported['prefix']
    assert (of_model['select_threshold'], of_model['nms_threshold'], of_model['keep_top_k']) == pytest.approx(
        (0.01, 0.45, 200))
    assert of_model['num_images'] == of_checkpoint['num_images'] == 3
    for name, entry in of_checkpoint['per_class'].items():
        assert of_model['per_class'][name]['num_gt'] == entry['num_gt']
        assert of_model['per_class'][name]['num_detections'] == entry['num_detections']
        if entry['ap_voc07'] is not None:
            assert abs(of_model['per_class'][name]['ap_voc07'] - entry['ap_voc07']) <= 0.01, name
    assert of_checkpoint['map_voc07'] > 0    # the figures compared are not all 0
    assert abs(of_model['map_voc07'] - of_checkpoint['map_voc07']) <= 0.01
    assert (tmp_path / 'plots' / 'detections.png').exists()


@pytest.mark.parametrize('extra, message', [
    (['--select_threshold=0.5'], '--select_threshold: a TFLite model keeps the network and post-processing it '
                                 'was exported with'),
    (['--checkpoint_path=c'], 'give one of --checkpoint_path (a checkpoint) and --model (a .tflite model)'),
    (['--wait_for_checkpoints'], '--wait_for_checkpoints watches a train_dir'),
])
def test_eval_flags_a_tflite_model_cannot_take_are_one_line(exported, extra, message):
    result = fixtures.run_script(['eval_ssd_network.py', f'--dataset_dir={exported["root"] / "data"}',
                                  f'--model={exported["model"]}'] + extra)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f'eval_ssd_network.py: error: {message}')


def test_eval_of_a_model_trained_with_labels_offset_scores_the_shifted_ground_truth(exported, tmp_path):
    """Its .labels.txt (can, box) is the records' (bottle, can, box) less the first class: labels_offset 1, so
    record label 1 (bottle) is dropped and 2 (can) -> 1, 3 (box) -> 2, as a checkpoint's evaluation does."""
    fixtures.make_checkpoint(str(tmp_path / 'train'), num_classes=3, class_names=['none', 'can', 'box'],
                             labels_offset=1)
    _export(tmp_path / 'train', tmp_path / 'offset.tflite')
    results = _evaluate(exported['root'] / 'data', tmp_path, f'--model={tmp_path / "offset.tflite"}')
    assert {name: entry['num_gt'] for name, entry in results['per_class'].items()} == {'can': 2, 'box': 0}


def test_detect_refuses_post_processing_flags_a_tflite_model_cannot_take(exported, tmp_path):
    result = fixtures.run_script(['detect.py', f'--model={exported["model"]}', f'--images={tmp_path / "a.png"}',
                                  f'--output_dir={tmp_path / "out"}', '--nms_threshold=0.3'])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        'detect.py: error: --nms_threshold: a TFLite model keeps the network and post-processing it was exported with')


@pytest.mark.parametrize('script, args', [('eval_ssd_network.py', ['--dataset_dir={data}']),
                                          ('detect.py', ['--images={image}', '--output_dir={out}'])])
def test_a_labels_file_of_another_class_count_is_one_line(exported, tmp_path, script, args):
    """A .labels.txt of 3 names beside a model of 4 classes (another export's): eval and detect refuse it."""
    model = tmp_path / 'm.tflite'
    model.write_bytes(open(exported['model'], 'rb').read())
    (tmp_path / 'm.labels.txt').write_text('none\nbox\ncan\n', encoding='utf-8')
    image = tmp_path / 'a.png'
    Image.fromarray(fixtures.make_image(IMAGE_SIDE, IMAGE_SIDE, 0)).save(image)
    values = dict(data=exported['root'] / 'data', image=image, out=tmp_path / 'out')
    result = fixtures.run_script([script, f'--model={model}'] + [arg.format(**values) for arg in args])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'{script}: error: {tmp_path / "m.labels.txt"}: 3 class names with the background, the model has 4 classes; '
        f'export it again (export_tflite.py writes the file)')


def test_eval_of_a_model_of_other_classes_is_one_line_naming_them(exported, tmp_path):
    model = tmp_path / 'other.tflite'
    model.write_bytes(open(exported['model'], 'rb').read())
    open(tflite_detector.labels_path(str(model)), 'w').write('none\nbottle\ncup\nbox\n')
    result = fixtures.run_script(['eval_ssd_network.py', f'--dataset_dir={exported["root"] / "data"}',
                                  f'--model={model}', f'--plot_dir={tmp_path / "plots"}'])
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "its classes are not those of --model=%s (label 2 is 'can' in the dataset, 'cup' in the model)" % model \
        in last
    assert 'Records checked' not in result.stderr   # said before the whole split is read


TRAINED_CHECKPOINT = os.environ.get('SSD_TRAINED_CHECKPOINT', os.path.join(fixtures.REPO_ROOT, 'ckpt', 'demo'))
TRAINED_DATASET = os.environ.get('SSD_TRAINED_DATASET', os.path.join(fixtures.REPO_ROOT, 'demo', 'tfrecords'))


@pytest.mark.skipif(not (tf.train.latest_checkpoint(TRAINED_CHECKPOINT) and os.path.isdir(TRAINED_DATASET)),
                    reason='needs a trained checkpoint: the Quick start writes ckpt/demo and demo/tfrecords (or set '
                           'SSD_TRAINED_CHECKPOINT and SSD_TRAINED_DATASET)')
def test_int8_model_keeps_the_float_model_s_map_on_the_demo_test_split(tmp_path):
    _export(TRAINED_CHECKPOINT, tmp_path / 'float.tflite')
    _export(TRAINED_CHECKPOINT, tmp_path / 'int8.tflite', '--quantize=int8', f'--dataset_dir={TRAINED_DATASET}')
    float_map = _evaluate(TRAINED_DATASET, tmp_path, f'--model={tmp_path / "float.tflite"}')['map_voc07']
    int8_map = _evaluate(TRAINED_DATASET, tmp_path, f'--model={tmp_path / "int8.tflite"}')['map_voc07']
    assert float_map > 0.3, 'the checkpoint does not look trained (mAP %.3f)' % float_map
    assert abs(int8_map - float_map) <= 0.02, (float_map, int8_map)
