"""deployment/export_serving_model.py: a versioned SavedModel that, loaded in a fresh TF2 process, gives the
checkpoint's detections; bad bytes give a clear error; failures leave no version directory behind."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2

from deployment import serving_model
from utils import checkpoints
from utils.model_config import inference_config
from tests import inference_fixtures as fixtures
from utils.errors import UserError

# Runs in a fresh interpreter, in TF2 mode (no disable_v2_behavior), as a serving client would load it.
_LOAD_AND_RUN = r'''
import json, sys
import numpy as np
import tensorflow as tf
model_dir, png_path, jpeg_path, turned_path, out_path = sys.argv[1:6]
model = tf.saved_model.load(model_dir)
png, jpeg, turned = (open(path, 'rb').read() for path in (png_path, jpeg_path, turned_path))
by_bytes = model.signatures['serving_default'](image_bytes=tf.constant([png, jpeg]))
decoded = tf.io.decode_image(png, channels=3)[None]
by_uint8 = model.signatures['serving_uint8'](images=decoded)
# A portrait shot stored landscape (EXIF orientation 6): its bytes, against its pixels turned 90 degrees
# clockwise here and as stored.
by_turned_bytes = model.signatures['serving_default'](image_bytes=tf.constant([turned]))
stored = tf.io.decode_jpeg(turned).numpy()
by_upright = model.signatures['serving_uint8'](images=np.rot90(stored, k=-1)[None].copy())
by_stored = model.signatures['serving_uint8'](images=stored[None])
try:
    model.signatures['serving_default'](image_bytes=tf.constant([b'not an image']))
    error = None
except tf.errors.InvalidArgumentError as err:
    error = err.message
def arrays(outputs):
    return {k: v.numpy().astype(str) if v.dtype == tf.string else v.numpy() for k, v in outputs.items()}
runs = {'bytes': by_bytes, 'uint8': by_uint8, 'turned_bytes': by_turned_bytes, 'upright': by_upright,
        'stored': by_stored}
np.savez(out_path, **{f'{run}_{k}': v for run, outputs in runs.items() for k, v in arrays(outputs).items()})
print(json.dumps({'signatures': sorted(model.signatures), 'error': error}))
'''


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('export')
    prefix = fixtures.make_checkpoint(str(root / 'train'))
    png = fixtures.encode(fixtures.make_image(120, 160, 0), 'PNG')
    jpeg = fixtures.encode(fixtures.make_image(200, 90, 1), 'JPEG')
    (root / 'a.png').write_bytes(png)
    (root / 'b.jpg').write_bytes(jpeg)
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = io.BytesIO()
    Image.fromarray(fixtures.make_image(90, 160, 2)).save(turned, format='JPEG', exif=exif)
    (root / 'c.jpg').write_bytes(turned.getvalue())
    model_base = root / 'model'
    (model_base / '.export-tmp-killed').mkdir(parents=True)   # what an export killed midway leaves
    export_run = fixtures.run_script(['deployment/export_serving_model.py', '--checkpoint_path=%s' % (root / 'train'),
                                      '--output_dir=%s' % model_base])
    assert export_run.returncode == 0, export_run.stderr[-2000:]
    load_run = fixtures.run_script(['-c', _LOAD_AND_RUN, str(model_base / '1'), str(root / 'a.png'),
                                    str(root / 'b.jpg'), str(root / 'c.jpg'), str(root / 'outputs.npz')])
    assert load_run.returncode == 0, load_run.stderr[-2000:]
    return {'root': root, 'prefix': prefix, 'png': png, 'jpeg': jpeg, 'model_base': model_base,
            'export_stdout': export_run.stdout, 'export_stderr': export_run.stderr, 'load_stderr': load_run.stderr,
            'load': json.loads(load_run.stdout.strip().splitlines()[-1]),
            'outputs': dict(np.load(root / 'outputs.npz'))}


def test_version_directory_is_complete_and_alone(exported):
    assert sorted(os.listdir(exported['model_base'])) == ['1']   # no temporary directory left, its own or older
    version_dir = exported['model_base'] / '1'
    assert (version_dir / 'saved_model.pb').is_file()
    # The weights are constants of the graph (oneDNN keeps their reordered copy): no variables to restore.
    assert not (version_dir / 'variables' / 'variables.index').exists()
    graph_def = saved_model_pb2.SavedModel.FromString((version_dir / 'saved_model.pb').read_bytes()).meta_graphs[0]
    op_types = {node.op for node in graph_def.graph_def.node}
    assert 'Const' in op_types and not op_types & {'VariableV2', 'VarHandleOp'}
    assert (version_dir / 'assets' / 'class_names.txt').read_text().split() == fixtures.CLASS_NAMES
    assert str(version_dir) in exported['export_stdout']
    assert '.export-tmp-' not in exported['export_stdout'] + exported['export_stderr']   # no temporary path shown


def test_fresh_tf2_process_gets_the_checkpoint_detections(exported):
    config = inference_config(exported['prefix'], {})
    expected = fixtures.reference_detections(exported['prefix'], [exported['png'], exported['jpeg']], config,
                                             dict(score_threshold=0.01, nms_threshold=0.45, top_k=400,
                                                  keep_top_k=200))
    outputs = exported['outputs']
    assert exported['load']['signatures'] == ['serving_default', 'serving_uint8']
    for index, reference in enumerate(expected):
        count = int(outputs['bytes_num_detections'][index])
        fixtures.assert_same_detections(reference, outputs['bytes_detection_boxes'][index, :count],
                                        outputs['bytes_detection_scores'][index, :count],
                                        outputs['bytes_detection_classes'][index, :count])
        names = outputs['bytes_detection_class_names'][index, :count]
        assert list(names) == [fixtures.CLASS_NAMES[c] for c in outputs['bytes_detection_classes'][index, :count]]
    count = int(outputs['uint8_num_detections'][0])
    fixtures.assert_same_detections(expected[0], outputs['uint8_detection_boxes'][0, :count],
                                    outputs['uint8_detection_scores'][0, :count],
                                    outputs['uint8_detection_classes'][0, :count])


def test_photo_stored_turned_is_detected_upright(exported):
    """The bytes of a photo with EXIF orientation 6 give the detections of its pixels turned upright (as
    training's records and detect.py have them), not those of its pixels as stored."""
    outputs = exported['outputs']
    count = int(outputs['turned_bytes_num_detections'][0])
    assert count > 0 and count == int(outputs['upright_num_detections'][0])
    for key in ('detection_boxes', 'detection_scores', 'detection_classes'):
        np.testing.assert_allclose(outputs[f'turned_bytes_{key}'][0, :count], outputs[f'upright_{key}'][0, :count],
                                   atol=1e-5)
    assert 'oneDNN supports' not in exported['load_stderr']     # no error-level notice in the user's process
    stored_count = int(outputs['stored_num_detections'][0])
    assert not (stored_count == count and np.allclose(outputs['stored_detection_boxes'][0, :count],
                                                      outputs['turned_bytes_detection_boxes'][0, :count], atol=1e-3))


def test_bad_bytes_give_invalid_argument_naming_the_problem(exported):
    assert exported['load']['error'] is not None
    assert 'Unknown image file format' in exported['load']['error']
    assert 'decode_image_bytes' in exported['load']['error']


def test_saved_model_cli_lists_both_signatures(exported):
    shown = fixtures.run_script(['-m', 'tensorflow.python.tools.saved_model_cli', 'show', '--dir',
                                 str(exported['model_base'] / '1'), '--all'])
    assert shown.returncode == 0, shown.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['serving_uint8']", "inputs['image_bytes']",
                 "outputs['detection_boxes']", "outputs['num_detections']"):
        assert text in shown.stdout


def test_restore_failure_is_one_line_and_leaves_no_version(exported, tmp_path):
    with pytest.raises(UserError, match='does not fit the network') as caught:
        prefix = checkpoints.require_checkpoint(str(exported['root'] / 'train'))
        serving_model.export(prefix, inference_config(prefix, {'depth_multiplier': 0.25}), str(tmp_path), {})
    assert '\n' not in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_missing_checkpoint_is_a_user_error(tmp_path):
    result = fixtures.run_script(['deployment/export_serving_model.py', '--checkpoint_path=%s' % (tmp_path / 'none'),
                                  '--output_dir=%s' % (tmp_path / 'model')])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith('export_serving_model.py: error: --checkpoint_path=')
    assert not (tmp_path / 'model').exists() or os.listdir(tmp_path / 'model') == []


def test_next_version_counts_integer_directories_only(tmp_path):
    assert serving_model.next_version(str(tmp_path / 'absent')) == 1
    for name in ('1', '3', 'tmp', '.export-tmp-x'):
        (tmp_path / name).mkdir()
    (tmp_path / '7').write_text('a file, not a version')
    assert serving_model.next_version(str(tmp_path)) == 4
