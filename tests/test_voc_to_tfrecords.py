"""VOC -> TFRecord converter: round trip, every kind of bad input, shards, splits, atomic writes, exit codes.

Records are read back with tf.io.parse_single_example here (independent of the input pipeline);
expected boxes are the XML's pixel values divided by the image size, computed by hand in numpy.
"""
import glob
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image, ImageOps

from datasets import dataset_info, tfrecord_writer, voc_to_tfrecords
from datasets.voc_splits import plan_splits
from datasets.voc_to_tfrecords import ConversionOptions, convert_voc_dataset
from utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = {
    'image/height': tf.io.FixedLenFeature([], tf.int64),
    'image/width': tf.io.FixedLenFeature([], tf.int64),
    'image/channels': tf.io.FixedLenFeature([], tf.int64),
    'image/shape': tf.io.FixedLenFeature([3], tf.int64),
    'image/format': tf.io.FixedLenFeature([], tf.string),
    'image/encoded': tf.io.FixedLenFeature([], tf.string),
    **{f'image/object/bbox/{k}': tf.io.VarLenFeature(tf.float32) for k in ('xmin', 'ymin', 'xmax', 'ymax')},
    **{f'image/object/bbox/{k}': tf.io.VarLenFeature(tf.int64) for k in ('label', 'difficult', 'truncated')},
    'image/object/bbox/label_text': tf.io.VarLenFeature(tf.string),
}


def read_records(paths):
    """All records of the shards, each parsed into a dict of numpy values (+ 'pixels', the decoded image)."""
    serialized = [r for path in paths for r in tf.io.tf_record_iterator(path)]
    graph = tf.Graph()
    with graph.as_default():
        placeholder = tf.placeholder(tf.string, [])
        parsed = tf.io.parse_single_example(placeholder, FEATURES)
        tensors = {k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v for k, v in parsed.items()}
        tensors['pixels'] = tf.io.decode_image(parsed['image/encoded'], channels=3, expand_animations=False)
        with tf.Session(graph=graph) as session:
            return [session.run(tensors, {placeholder: s}) for s in serialized]


def jpeg_bytes(width, height, colour=(200, 60, 30), mode='RGB'):
    out = io.BytesIO()
    Image.new(mode, (width, height), colour).save(out, format='JPEG', quality=95)
    return out.getvalue()


def write_sample(root, stem, objects, image=None, size=None, filename=None, xml=None):
    """Annotations/<stem>.xml (objects: (name, xmin, ymin, xmax, ymax, extra_tags)) + JPEGImages/<filename>."""
    os.makedirs(os.path.join(root, 'Annotations'), exist_ok=True)
    os.makedirs(os.path.join(root, 'JPEGImages'), exist_ok=True)
    filename = filename or stem + '.jpg'
    if image is not None:
        with open(os.path.join(root, 'JPEGImages', filename), 'wb') as out:
            out.write(image)
    if xml is None:
        width, height = size
        body = ''.join(
            f'<object><name>{name}</name>{extra}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>'
            f'<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>' for name, x0, y0, x1, y1, extra in objects)
        xml = (f'<annotation><folder>JPEGImages</folder><filename>{filename}</filename><size><width>{width}'
               f'</width><height>{height}</height><depth>3</depth></size>{body}</annotation>')
    with open(os.path.join(root, 'Annotations', stem + '.xml'), 'w') as out:
        out.write(xml)


def convert(root, **kwargs):
    """convert_voc_dataset into root/out with the summary captured; -> (result, summary text)."""
    lines = []
    result = convert_voc_dataset(str(root), str(root / 'out'), ConversionOptions(**kwargs), log_fn=lines.append)
    return result, '\n'.join(lines)


def test_round_trip_boxes_labels_flags(tmp_path):
    write_sample(tmp_path, 'a', [('can', 10, 20, 110, 70, '<difficult>1</difficult><truncated>0</truncated>'),
                                 ('bottle', 1, 1, 200, 100, '<truncated>1</truncated>'),
                                 ('can', 35.5, 40.25, 60.75, 99, '')],
                 image=jpeg_bytes(200, 100), size=(200, 100))
    original = jpeg_bytes(64, 48, colour=(10, 220, 90))
    write_sample(tmp_path, 'b', [('bottle', 5, 6, 30, 40, '<difficult>0</difficult>')], image=original, size=(64, 48))
    result, _ = convert(tmp_path)
    assert result.info.class_names == ['none', 'bottle', 'can']  # sorted names found, 0 = background
    records = read_records(dataset_info.list_shards(str(tmp_path / 'out'), 'train'))
    assert len(records) == 2
    a, b = records
    expected = np.array([[10, 20, 110, 70], [1, 1, 200, 100], [35.5, 40.25, 60.75, 99]]) / [200, 100, 200, 100]
    for column, key in enumerate(('xmin', 'ymin', 'xmax', 'ymax')):
        np.testing.assert_allclose(a[f'image/object/bbox/{key}'], expected[:, column], atol=1e-6)
    assert list(a['image/object/bbox/label']) == [2, 1, 2]
    assert list(a['image/object/bbox/label_text']) == [b'can', b'bottle', b'can']
    assert list(a['image/object/bbox/difficult']) == [1, 0, 0]
    assert list(a['image/object/bbox/truncated']) == [0, 1, 0]
    assert (a['image/height'], a['image/width'], a['image/channels']) == (100, 200, 3)
    assert list(a['image/shape']) == [100, 200, 3] and a['pixels'].shape == (100, 200, 3)
    assert b['image/format'] == b'JPEG' and b['image/encoded'] == original  # RGB JPEG kept byte for byte
    np.testing.assert_allclose(b['image/object/bbox/ymax'], [40 / 48], atol=1e-6)
    assert result.info.boxes_per_class == {'bottle': 2, 'can': 2}


def _bad_inputs_dataset(root):
    """A folder mixing every kind of bad input with good images; each sample has its own image width.
    Samples are converted in name order: 'a_good' comes before every bad one and 'zz_good' after."""
    def good(stem, width, **kwargs):
        write_sample(root, stem, [('can', 2, 2, 20, 20, '')], image=jpeg_bytes(width, 40), size=(width, 40), **kwargs)
    good('a_good', 101)
    write_sample(root, 'missing_image', [('can', 2, 2, 20, 20, '')], size=(50, 40))
    write_sample(root, 'undecodable', [('can', 2, 2, 20, 20, '')], image=b'not an image at all', size=(50, 40))
    write_sample(root, 'cut_jpeg', [('can', 2, 2, 20, 20, '')], image=jpeg_bytes(300, 200)[:400], size=(300, 200))
    write_sample(root, 'malformed', [], xml='<annotation><object><name>can</name></annotation>')
    write_sample(root, 'bomb', [], xml='<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa">'
                 '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><annotation><filename>&b;</filename></annotation>')
    write_sample(root, 'external', [], xml='<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM '
                 '"file:///etc/passwd">]><annotation><filename>&xxe;</filename></annotation>')
    write_sample(root, 'unknown_class', [('can', 2, 2, 20, 20, ''), ('alien', 3, 3, 9, 9, '')],
                 image=jpeg_bytes(102, 40), size=(102, 40))
    write_sample(root, 'out_of_image', [('can', -5, 10, 130, 50, '')], image=jpeg_bytes(103, 40), size=(103, 40))
    write_sample(root, 'zero_area', [('can', 10, 10, 10, 30, ''), ('bottle', 2, 3, 40, 30, '')],
                 image=jpeg_bytes(104, 40), size=(104, 40))
    write_sample(root, 'swapped', [('can', 94, 5, 30, 30, ''), ('can', 2, 30, 20, 3, ''), ('bottle', 1, 2, 9, 9, '')],
                 image=jpeg_bytes(112, 40), size=(112, 40))
    write_sample(root, 'no_object', [], image=jpeg_bytes(105, 40), size=(105, 40))
    write_sample(root, 'wrong_size', [('can', 2, 2, 20, 20, '')], image=jpeg_bytes(106, 40), size=(500, 400))
    for stem, width, mode, colour in (('gray', 107, 'L', 128), ('palette', 108, 'P', 3),
                                      ('rgba', 109, 'RGBA', (0, 0, 255, 0))):
        out = io.BytesIO()
        Image.new(mode, (width, 40), colour).save(out, format='PNG')
        write_sample(root, stem, [('can', 2, 2, 20, 20, '')], image=out.getvalue(), size=(width, 40),
                     filename=stem + '.png')
    write_sample(root, 'cmyk', [('can', 2, 2, 20, 20, '')],
                 image=jpeg_bytes(110, 40, colour=(0, 255, 255, 0), mode='CMYK'), size=(110, 40))
    good('zz_good', 111)


@pytest.fixture(scope='module')
def bad_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp('bad')
    _bad_inputs_dataset(root)
    result, summary = convert(root, class_names=['bottle', 'can'])
    records = {int(r['image/width']): r for r in read_records(result.shards['train'])}
    return result, summary, records


@pytest.mark.parametrize('stem, kind, reason', [
    ('missing_image', 'excluded', 'image not found: no JPEGImages/missing_image.jpg, .jpeg, .png, .webp, .bmp, '
                                  '.tif, .tiff or .gif (any case)'),
    ('undecodable', 'excluded', 'cannot decode image undecodable.jpg'),
    ('cut_jpeg', 'excluded', 'cannot decode image cut_jpeg.jpg'),
    ('malformed', 'excluded', 'malformed XML'),
    ('bomb', 'excluded', 'unsafe XML refused: entity declaration'),
    ('external', 'excluded', 'unsafe XML refused: external entity'),
    ('unknown_class', 'excluded', "class 'alien' not in the label list"),
    ('out_of_image', 'repaired', 'extends outside the 103x40 image: clipped'),
    ('zero_area', 'repaired', "box 1 ('can', x 10..10, y 10..30) has zero area: dropped"),
    ('swapped', 'repaired', "box 1 ('can', x 94..30, y 5..30) has xmax 30 < xmin 94: dropped"),
    ('swapped', 'repaired', "box 2 ('can', x 2..20, y 30..3) has ymax 3 < ymin 30: dropped"),
    ('no_object', 'background-only', 'no objects: kept as a background-only sample'),
    ('wrong_size', 'warning', '<size> 500x400 differs from the real image size 106x40'),
    ('gray', 'converted', 'L PNG converted to RGB'),
    ('palette', 'converted', 'P PNG converted to RGB'),
    ('rgba', 'converted', 'RGBA PNG converted to RGB'),
    ('cmyk', 'converted', 'CMYK JPEG converted to RGB'),
])
def test_bad_input_is_named_in_summary_and_good_images_written(bad_inputs, stem, kind, reason):
    result, summary, records = bad_inputs
    lines = [line for line in summary.splitlines() if f'Annotations/{stem}.xml' in line]
    assert any(f'{kind}: ' in line and reason in line for line in lines), lines
    assert {101, 111} <= set(records)  # the good images on either side (first and last by name) were written


def test_bad_inputs_counts_and_repaired_records(bad_inputs):
    result, summary, records = bad_inputs
    assert result.count('excluded') == 7
    assert sorted(records) == [101, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112]
    assert (list(records)[0], list(records)[-1]) == (101, 111)  # in file order: a_good first, zz_good last
    assert summary.splitlines()[0].startswith('Wrote 11 images (train 11)')
    np.testing.assert_allclose([records[103][f'image/object/bbox/{k}'][0] for k in ('xmin', 'xmax')],
                               [0.0, 1.0], atol=1e-6)                      # clipped to the image
    assert list(records[104]['image/object/bbox/label_text']) == [b'bottle']  # zero-area box dropped
    assert list(records[112]['image/object/bbox/label_text']) == [b'bottle']  # swapped-corner boxes dropped
    assert records[105]['image/object/bbox/label'].size == 0                   # background-only sample
    assert (records[106]['image/height'], records[106]['image/width']) == (40, 106)  # real size wins
    np.testing.assert_allclose(records[106]['image/object/bbox/xmax'], [20 / 106], atol=1e-6)


def test_converted_images_are_rgb(bad_inputs):
    records = bad_inputs[2]
    assert (records[107]['image/format'], records[110]['image/format']) == (b'PNG', b'JPEG')
    assert all(r['pixels'].shape == (40, w, 3) and r['image/channels'] == 3 for w, r in records.items())
    assert np.all(records[107]['pixels'] == 128)                 # gray 128 -> (128, 128, 128)
    assert np.all(records[109]['pixels'] == 255)                 # fully transparent -> white
    assert np.all(np.abs(records[110]['pixels'].astype(int) - [255, 0, 0]) < 12)  # CMYK (0,1,1,0) is red


def test_summary_caps_lines_and_full_report_is_written(tmp_path):
    for index in range(4):
        write_sample(tmp_path, f'empty_{index}', [], image=jpeg_bytes(30, 20), size=(30, 20))
    result = convert_voc_dataset(str(tmp_path), str(tmp_path / 'out'), ConversionOptions(class_names=['can']),
                                 log_fn=lambda _: None)
    summary = voc_to_tfrecords.format_summary(result, 'OUT', max_lines_per_kind=2)
    assert sum('background-only: ' in line for line in summary) == 2
    assert '... and 2 more background-only' in summary[-1]
    report = (tmp_path / 'out' / voc_to_tfrecords.REPORT_FILENAME).read_text()
    assert all(f'Annotations/empty_{i}.xml' in report for i in range(4))


def test_images_left_out_for_classes_not_in_the_label_list_are_summed_up_by_class(tmp_path):
    for index, names in enumerate((['can'], ['bottle'], ['bottle', 'can'], ['bottle', 'jar'])):
        write_sample(tmp_path, f'img{index}', [(name, 1, 1, 9, 9, '') for name in names],
                     image=jpeg_bytes(20 + index, 20), size=(20 + index, 20))
    result, summary = convert(tmp_path, class_names=['can'])
    assert result.info.num_samples == {'train': 1}
    lines = summary.splitlines()
    at = lines.index("  3 image(s) left out for classes not in the label list ('bottle' in 3, 'jar' in 1); add "
                     "those classes to the labels file to keep the images")
    assert lines[at - 1].startswith('  excluded: Annotations/img3.xml: ')          # right under the excluded lines


def test_shard_names_and_samples_per_file(tmp_path):
    for index in range(5):
        write_sample(tmp_path, f'img{index}', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20 + index, 20),
                     size=(20 + index, 20))
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'shelf_train_007.tfrecord').write_bytes(b'stale')           # an older, longer run
    (out / 'other_train_000.tfrecord').write_bytes(b'another dataset')
    result, _ = convert(tmp_path, dataset_name='shelf', samples_per_file=2)
    names = sorted(os.path.basename(p) for p in glob.glob(str(out / 'shelf_*')))
    assert names == ['shelf_train_000.tfrecord', 'shelf_train_001.tfrecord', 'shelf_train_002.tfrecord']
    assert [len(read_records([p])) for p in result.shards['train']] == [2, 2, 1]
    assert (out / 'other_train_000.tfrecord').exists()
    assert dataset_info.load_dataset_info(str(out)).num_samples == {'train': 5}


def test_validation_fraction_is_deterministic(tmp_path):
    for index in range(10):
        write_sample(tmp_path, f'img{index}', [], size=(8, 8))
    first = plan_splits(str(tmp_path), validation_fraction=0.3, seed=5)
    assert first == plan_splits(str(tmp_path), validation_fraction=0.3, seed=5)
    assert first != plan_splits(str(tmp_path), validation_fraction=0.3, seed=6)
    assert len(first['test']) == 3 and len(first['train']) == 7
    assert sorted(first['train'] + first['test']) == [f'img{i}' for i in range(10)]
    assert plan_splits(str(tmp_path), split_name='trainval') == {'trainval': [f'img{i}' for i in range(10)]}
    with pytest.raises(UserError, match='validation_fraction'):
        plan_splits(str(tmp_path), validation_fraction=1.0)


def test_split_lists_write_one_set_per_split(tmp_path):
    for index in range(4):
        write_sample(tmp_path, f'{index:06d}', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    lists = tmp_path / 'ImageSets' / 'Main'
    lists.mkdir(parents=True)
    (lists / 'train.txt').write_text('000000\n000001\n000002\n')
    (lists / 'test.txt').write_text('000003\n000009\n')                 # 000009 has no annotation
    (lists / 'can_train.txt').write_text('000000  1\n')                 # VOC per-class list: ignored
    result, summary = convert(tmp_path)
    assert result.info.num_samples == {'test': 1, 'train': 3}
    assert 'excluded: Annotations/000009.xml: listed in ImageSets/Main/test.txt, but does not exist' in summary
    assert result.count('warning') == 0
    with pytest.raises(UserError, match='split lists exist'):
        convert(tmp_path, validation_fraction=0.2)
    with pytest.raises(UserError, match='val.txt: not found'):
        convert(tmp_path, split_name='val')


def _folder(root, samples):
    """A VOC folder of 20x20 JPEGs; samples: stem -> class names of its boxes."""
    for stem, names in samples.items():
        write_sample(root, stem, [(name, 1 + i, 1, 9 + i, 9, '') for i, name in enumerate(names)],
                     image=jpeg_bytes(20, 20), size=(20, 20))


def test_splits_converted_one_at_a_time_are_merged(tmp_path):
    """SSD-Tensorflow's workflow: VOC's train and test folders converted in turn into one folder."""
    train, test, out = tmp_path / 'train', tmp_path / 'test', str(tmp_path / 'out')
    _folder(train, {'t0': ['can', 'bottle'], 't1': ['can'], 't2': ['bottle']})
    _folder(test, {'v0': ['can'], 'v1': ['can', 'can']})
    logs = []
    convert_voc_dataset(str(train), out, ConversionOptions(split_name='train'), log_fn=logs.append)
    with pytest.raises(UserError) as raised:                  # test's annotations name only 'can'
        convert_voc_dataset(str(test), out, ConversionOptions(split_name='test'), log_fn=logs.append)
    assert str(raised.value).startswith(os.path.join(out, 'dataset_info.json') + ': its classes (bottle, can)')
    assert f'this run\'s (can: the names in {test / "Annotations"})' in str(raised.value)
    assert '--labels_file' in str(raised.value) and not glob.glob(os.path.join(out, '*_test_*'))
    convert_voc_dataset(str(test), out, ConversionOptions(split_name='test', class_names=['bottle', 'can']),
                        log_fn=logs.append)
    info = dataset_info.load_dataset_info(out)
    assert info.num_samples == {'train': 3, 'test': 2}
    assert info.boxes_per_class == {'bottle': 2, 'can': 2 + 3}
    assert [len(read_records(dataset_info.list_shards(out, split))) for split in ('train', 'test')] == [3, 2]
    assert [list(r['image/object/bbox/label']) for r in read_records(dataset_info.list_shards(out, 'test'))] == \
        [[2], [2, 2]]                                         # 'can' is label 2 in both splits
    _folder(train, {'t3': ['bottle', 'bottle']})              # reconverting train keeps test
    convert_voc_dataset(str(train), out, ConversionOptions(split_name='train'), log_fn=logs.append)
    info = dataset_info.load_dataset_info(out)
    assert info.num_samples == {'test': 2, 'train': 4} and info.boxes_per_class == {'bottle': 4, 'can': 5}
    assert 'Keeping test 2 from dataset_info.json' in logs


def test_merge_refuses_an_unreadable_info_or_shard_and_drops_a_split_without_shards(tmp_path):
    _folder(tmp_path, {'a': ['can'], 'b': ['can']})
    out = tmp_path / 'out'
    convert(tmp_path, split_name='train')
    convert(tmp_path, split_name='test')
    (out / 'commodity_test_000.tfrecord').write_bytes(b'not a record')
    with pytest.raises(UserError, match='commodity_test_000.tfrecord: corrupt TFRecord shard'):
        convert(tmp_path, split_name='train')
    label_5 = {'image/object/bbox/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[5])),
               **{f'image/object/bbox/{c}': tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                  for c, v in (('ymin', 0.1), ('xmin', 0.1), ('ymax', 0.5), ('xmax', 0.5))}}
    with tf.io.TFRecordWriter(str(out / 'commodity_test_000.tfrecord')) as writer:   # 'can' is the only class
        writer.write(tf.train.Example(features=tf.train.Features(feature=label_5)).SerializeToString())
    with pytest.raises(UserError, match=r'commodity_test_000.tfrecord: label 5 outside 1\.\.1'):
        convert(tmp_path, split_name='train')
    os.remove(out / 'commodity_test_000.tfrecord')
    _, summary = convert(tmp_path, split_name='train')
    assert "Dropping split 'test' from dataset_info.json: its shards are gone" in summary
    assert dataset_info.load_dataset_info(str(out)).num_samples == {'train': 2}
    (out / 'dataset_info.json').write_text('{}')
    with pytest.raises(UserError, match='dataset_info.json: .*; fix it, or delete it'):
        convert(tmp_path, split_name='train')


def test_class_names_typed_two_ways_are_warned_about(tmp_path):
    write_sample(tmp_path, 'a', [('can', 1, 1, 9, 9, ''), ('Can', 2, 2, 9, 9, ''), ('bottle', 1, 1, 5, 5, '')],
                 image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(tmp_path, 'b', [('soda_can', 1, 1, 9, 9, ''), ('Soda  Can', 1, 1, 9, 9, ''),
                                 ('bottles', 1, 1, 9, 9, ''), (' bottle ', 1, 1, 9, 9, '')],   # spaces around: dropped
                 image=jpeg_bytes(20, 20), size=(20, 20))
    result, summary = convert(tmp_path)
    assert result.info.class_names == ['none', 'Can', 'Soda  Can', 'bottle', 'bottles', 'can', 'soda_can']
    warnings = [issue.reason for issue in result.issues if issue.kind == 'warning']
    assert len(warnings) == 2
    assert "class names 'Can', 'can' differ only in case" in warnings[0]
    assert "class names 'Soda  Can', 'soda_can' differ only in case" in warnings[1]
    assert 'they are 2 classes' in summary


def test_default_classes_come_from_every_annotation(tmp_path):
    _folder(tmp_path, {'000000': ['can'], '000001': ['bottle']})
    write_sample(tmp_path, 'broken', [], xml='<annotation>')   # in no split: not this run's to report
    lists = tmp_path / 'ImageSets' / 'Main'
    lists.mkdir(parents=True)
    (lists / 'train.txt').write_text('000000\n')
    (lists / 'test.txt').write_text('000001\n')
    result, summary = convert(tmp_path, split_name='train')
    assert result.info.class_names == ['none', 'bottle', 'can'] and 'broken' not in summary
    record, = read_records(result.shards['train'])
    assert list(record['image/object/bbox/label']) == [2]
    result, _ = convert(tmp_path, split_name='test')
    assert result.info.num_samples == {'train': 1, 'test': 1}


def test_full_conversion_removes_splits_it_no_longer_writes(tmp_path):
    _folder(tmp_path, {f'img{index}': ['can'] for index in range(5)})
    out = tmp_path / 'out'
    convert(tmp_path, validation_fraction=0.4)
    assert glob.glob(str(out / 'commodity_test_*.tfrecord'))
    (out / 'other_test_000.tfrecord').write_bytes(b'another dataset')
    _, summary = convert(tmp_path)
    assert "Removed the shards of split 'test'" in summary
    assert not glob.glob(str(out / 'commodity_test_*')) and (out / 'other_test_000.tfrecord').exists()
    assert dataset_info.load_dataset_info(str(out)).num_samples == {'train': 5}
    with pytest.raises(UserError, match=f"{out}: split 'test' is not in dataset_info.json, which lists train"):
        dataset_info.list_shards(str(out), 'test')


def test_mpo_camera_jpeg_is_kept_as_jpeg(tmp_path):
    """Pillow opens a camera JPEG carrying an MPF preview frame as 'MPO'; its first frame is the photo."""
    mpo = io.BytesIO()
    Image.new('RGB', (40, 30), (200, 10, 10)).save(mpo, format='MPO', save_all=True,
                                                   append_images=[Image.new('RGB', (20, 15), (0, 0, 255))])
    mpo = mpo.getvalue()
    assert Image.open(io.BytesIO(mpo)).format == 'MPO'
    write_sample(tmp_path, 'camera', [('can', 1, 1, 9, 9, '')], image=mpo, size=(40, 30))
    result, summary = convert(tmp_path)
    assert result.count('excluded') == 0 and result.count('converted') == 0
    record, = read_records(result.shards['train'])
    assert record['image/format'] == b'JPEG' and record['image/encoded'] == mpo
    assert record['pixels'].shape == (30, 40, 3)
    assert np.all(np.abs(record['pixels'].astype(int) - [200, 10, 10]) < 8)   # the photo, not the preview


STORED_BOX = (8, 8, 24, 16)   # a white box on a black 40 x 24 photo, on JPEG's 8-pixel block edges


def exif_photo(orientation):
    """JPEG bytes of the 40 x 24 photo with STORED_BOX white, its EXIF orientation tag set."""
    image = Image.new('RGB', (40, 24), (0, 0, 0))
    image.paste((255, 255, 255), STORED_BOX)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format='JPEG', quality=95, exif=exif)
    return out.getvalue()


def white_box(pixels):
    """(xmin, ymin, xmax, ymax), pixel edges, of the bright pixels of an RGB array."""
    ys, xs = np.nonzero(pixels.mean(axis=2) > 128)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def record_box(record):
    """The record's first box in pixels of its image."""
    height, width = record['pixels'].shape[:2]
    return [record[f'image/object/bbox/{key}'][0] * (width if key[0] == 'x' else height)
            for key in ('xmin', 'ymin', 'xmax', 'ymax')]


@pytest.mark.parametrize('orientation', range(2, 9))
def test_photo_stored_turned_is_written_upright_with_the_boxes_drawn_on_its_stored_pixels(tmp_path, orientation):
    """LabelImg's way: boxes on the stored pixels, <size> theirs. Pillow's exif_transpose is the reference."""
    data = exif_photo(orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    write_sample(tmp_path, 'p', [('can', *STORED_BOX, '')], image=data, size=(40, 24))
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    assert record['pixels'].shape == upright.shape
    assert white_box(record['pixels']) == white_box(upright)
    np.testing.assert_allclose(record_box(record), white_box(upright), atol=1e-4)
    assert f'turned upright per its EXIF orientation {orientation}, re-encoded as JPEG' in summary
    # Turned 180 degrees or mirrored, the photo has the same size both ways: <size> cannot tell.
    assert result.count('warning') == (1 if orientation <= 4 else 0)
    assert ('boxes as drawn on the stored pixels (its <size>, as LabelImg writes it)' in summary) == (orientation > 4)
    assert ('<size> fits the photo both upright and as stored' in summary) == (orientation <= 4)


@pytest.mark.parametrize('orientation', [5, 6, 7, 8])
def test_boxes_drawn_on_the_photo_upright_stay_as_drawn(tmp_path, orientation):
    """A tool that shows photos upright: <size> is the upright photo's."""
    data = exif_photo(orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    drawn = white_box(upright)
    write_sample(tmp_path, 'p', [('can', *drawn, '')], image=data, size=(upright.shape[1], upright.shape[0]))
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    assert white_box(record['pixels']) == drawn
    np.testing.assert_allclose(record_box(record), drawn, atol=1e-4)
    assert result.count('warning') == 0
    assert 'boxes as drawn on the upright photo (its <size>)' in summary


def test_turned_photo_without_size_takes_its_boxes_as_drawn_on_the_stored_pixels(tmp_path):
    data = exif_photo(6)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    write_sample(tmp_path, 'p', [], image=data, xml='<annotation><filename>p.jpg</filename><object><name>can</name>'
                 '<bndbox><xmin>8</xmin><ymin>8</ymin><xmax>24</xmax><ymax>16</ymax></bndbox></object></annotation>')
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    np.testing.assert_allclose(record_box(record), white_box(upright), atol=1e-4)
    assert 'EXIF orientation 6 and no <size>: boxes taken as drawn on the stored pixels' in summary


def test_photo_stored_upright_keeps_its_bytes(tmp_path):
    data = exif_photo(1)
    write_sample(tmp_path, 'p', [('can', *STORED_BOX, '')], image=data, size=(40, 24))
    result, _ = convert(tmp_path)
    record, = read_records(result.shards['train'])
    assert record['image/encoded'] == data and result.count('converted') == 0
    np.testing.assert_allclose(record_box(record), STORED_BOX, atol=1e-4)


def large_photo(orientation=1):
    """JPEG bytes of exif_photo's photo at 10x its size (400 x 240, the white box at 10x STORED_BOX)."""
    image = Image.new('RGB', (400, 240), (0, 0, 0))
    image.paste((255, 255, 255), tuple(10 * v for v in STORED_BOX))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, format='JPEG', quality=95, exif=exif)
    return out.getvalue()


def test_downscaled_size_brings_the_shorter_side_to_the_limit():
    from datasets.voc_reader import downscaled_size
    assert downscaled_size(3024, 4032, 1536) == (1536, 2048)     # a phone's 12 MP photo, landscape
    assert downscaled_size(4032, 3024, 1536) == (2048, 1536)     # and portrait
    assert downscaled_size(1000, 3001, 500) == (500, 1500)       # 1500.5 rounds to even
    assert downscaled_size(1536, 2048, 1536) == (1536, 2048)     # at the limit: kept
    assert downscaled_size(3024, 4032, 0) == (3024, 4032)        # 0: no limit


def test_large_photo_is_stored_downscaled_and_its_boxes_still_frame_the_object(tmp_path):
    write_sample(tmp_path, 'p', [('can', 80, 80, 240, 160, '')], image=large_photo(), size=(400, 240))
    result, summary = convert(tmp_path, max_short_side=120)
    record, = read_records(result.shards['train'])
    # 400 x 240 -> 200 x 120: the white box (80, 80)-(240, 160) is at half its pixel values.
    assert (record['image/height'], record['image/width']) == (120, 200) and record['pixels'].shape == (120, 200, 3)
    assert list(record['image/shape']) == [120, 200, 3]
    np.testing.assert_allclose(record_box(record), (40, 40, 120, 80), atol=1e-4)
    assert np.all(np.abs(np.array(white_box(record['pixels'])) - (40, 40, 120, 80)) <= 1)
    assert result.count('converted') == 0
    assert '1 image(s) with a shorter side over 120 px stored downscaled to it (--max_short_side' in summary


def test_photo_turned_and_downscaled_in_one_pass(tmp_path):
    data = large_photo(orientation=6)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))   # 240 wide, 400 high
    write_sample(tmp_path, 'p', [('can', *(10 * v for v in STORED_BOX), '')], image=data, size=(400, 240))
    result, summary = convert(tmp_path, max_short_side=120)
    record, = read_records(result.shards['train'])
    assert record['pixels'].shape == (200, 120, 3)
    expected = np.array(white_box(upright)) / 2
    np.testing.assert_allclose(record_box(record), expected, atol=1e-4)
    assert np.all(np.abs(np.array(white_box(record['pixels'])) - expected) <= 1)
    assert 'turned upright per its EXIF orientation 6, re-encoded as JPEG' in summary
    assert '1 image(s) with a shorter side over 120 px stored downscaled' in summary


@pytest.mark.parametrize('max_short_side', [0, 240])
def test_photo_within_the_limit_keeps_its_bytes(tmp_path, max_short_side):
    data = large_photo()
    write_sample(tmp_path, 'p', [('can', 80, 80, 240, 160, '')], image=data, size=(400, 240))
    result, summary = convert(tmp_path, max_short_side=max_short_side)
    record, = read_records(result.shards['train'])
    assert record['image/encoded'] == data and 'downscaled' not in summary


@pytest.mark.parametrize('max_short_side', [0, 240])
def test_large_photo_kept_at_full_size_is_counted_only_without_a_limit(tmp_path, monkeypatch, max_short_side):
    monkeypatch.setattr(voc_to_tfrecords, 'DEFAULT_MAX_SHORT_SIDE', 200)   # the photo's shorter side is 240
    write_sample(tmp_path, 'p', [('can', 80, 80, 240, 160, '')], image=large_photo(), size=(400, 240))
    _, summary = convert(tmp_path, max_short_side=max_short_side)
    assert ('1 image(s) with a shorter side over 200 px kept at full size (--max_short_side=0)' in summary) == (
        max_short_side == 0)


def test_negative_max_short_side_is_a_user_error(tmp_path):
    write_sample(tmp_path, 'p', [('can', 80, 80, 240, 160, '')], image=large_photo(), size=(400, 240))
    with pytest.raises(UserError, match='--max_short_side=-1: must be 0'):
        convert(tmp_path, max_short_side=-1)


def test_a_conversion_that_fails_midway_leaves_the_previous_dataset_whole(tmp_path, monkeypatch):
    """Its shards are staged: the previous conversion's shards and dataset_info.json stay until the end."""
    for index in range(5):
        write_sample(tmp_path, f'img{index}', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    out = tmp_path / 'out'
    convert(tmp_path, samples_per_file=3)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert sorted(before) == ['commodity_train_000.tfrecord', 'commodity_train_001.tfrecord',
                              'conversion_report.txt', 'dataset_info.json']
    (out / (voc_to_tfrecords.STAGING_PREFIX + 'left-by-kill-9')).mkdir()   # a conversion killed before
    real_make_example, calls = voc_to_tfrecords.make_example, []

    def failing_make_example(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:                 # after a first shard of 2 was complete
            raise KeyboardInterrupt
        return real_make_example(*args, **kwargs)
    monkeypatch.setattr(voc_to_tfrecords, 'make_example', failing_make_example)
    with pytest.raises(KeyboardInterrupt):
        convert(tmp_path, samples_per_file=2)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before   # nothing staged left
    monkeypatch.setattr(voc_to_tfrecords, 'make_example', real_make_example)
    result, _ = convert(tmp_path, samples_per_file=2)
    assert result.shards['train'] == [str(out / f'commodity_train_00{i}.tfrecord') for i in range(3)]
    assert sorted(os.listdir(out)) == ['commodity_train_000.tfrecord', 'commodity_train_001.tfrecord',
                                       'commodity_train_002.tfrecord', 'conversion_report.txt', 'dataset_info.json']
    assert len(read_records(result.shards['train'])) == 5


def test_shard_is_invisible_until_complete(tmp_path):
    with tfrecord_writer.ShardWriter(str(tmp_path), 'demo', 'train', samples_per_file=10) as writer:
        writer.write(b'record')
        assert glob.glob(str(tmp_path / '*.tfrecord')) == []
    assert writer.paths == [str(tmp_path / 'demo_train_000.tfrecord')] and os.listdir(tmp_path) == ['demo_train_000.tfrecord']


def test_missing_annotations_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match='no Annotations/ folder'):
        convert(tmp_path)
    (tmp_path / 'VOC2007' / 'Annotations').mkdir(parents=True)       # --dataset_dir=VOCdevkit
    with pytest.raises(UserError, match=rf'no Annotations/ folder .*; the VOC folders inside it: {tmp_path}/VOC2007$'):
        convert(tmp_path)


def test_missing_dataset_or_images_folder_is_one_line(tmp_path):
    with pytest.raises(UserError) as raised:
        convert(tmp_path / 'IMAGES')
    assert str(raised.value) == f'{tmp_path / "IMAGES"}: no such directory'
    write_sample(tmp_path, 'a', [('can', 1, 1, 9, 9, '')], size=(20, 20))
    os.rmdir(tmp_path / 'JPEGImages')
    (tmp_path / 'images').mkdir()                                      # Label Studio's layout
    with pytest.raises(UserError) as raised:
        convert(tmp_path)
    assert str(raised.value) == (f'{tmp_path}: no JPEGImages/ folder (expected Pascal VOC layout: Annotations/*.xml '
                                 f'and JPEGImages/*.jpg); the folders there: Annotations/, images/')


def _run_script(*args):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tf_convert_data.py'), *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_script_exit_codes(tmp_path):
    good, bad = tmp_path / 'good', tmp_path / 'bad'
    write_sample(good, 'a', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(good, 'b', [], xml='<annotation>')
    done = _run_script(f'--dataset_dir={good}', f'--output_dir={good / "out"}', '--output_name=shop_val')
    assert done.returncode == 0, done.stderr
    assert 'excluded: Annotations/b.xml: malformed XML' in done.stdout and '1/2 images' in done.stderr
    assert os.listdir(good / 'out') and (good / 'out' / 'shop_val_000.tfrecord').exists()
    # The summary ends with each model's anchor fit on the split's one box (120 px at 300 x 300).
    fit = done.stdout.split('ssd_300_vgg, built-in anchors:')[1]
    assert "anchor fit on 1 boxes of split 'val' (1 records)" in fit and 'ssd_512_vgg, built-in anchors:' in fit
    # No 'test' split, which evaluation reads: the last line says how to make one, here by another conversion.
    assert done.stdout.strip().splitlines()[-1] == (
        "No 'test' split yet, which eval_ssd_network.py reads: convert it into the same --output_dir "
        "(--split_name=test, or --output_name=shop_test from VOC's test folder).")
    whole = _run_script(f'--dataset_dir={good}', f'--output_dir={good / "whole"}')
    assert whole.stdout.strip().splitlines()[-1] == (
        "No 'test' split, which eval_ssd_network.py reads: --validation_fraction=0.2 holds a fifth of the images "
        "out as one (or list the splits in ImageSets/Main).")
    write_sample(good, 'c', [('can', 2, 2, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    held_out = _run_script(f'--dataset_dir={good}', f'--output_dir={good / "held_out"}', '--validation_fraction=0.5')
    assert held_out.returncode == 0 and '(train 1, test 1)' in held_out.stdout, held_out.stdout
    assert "No 'test' split" not in held_out.stdout
    write_sample(bad, 'only', [('can', 1, 1, 9, 9, '')], size=(20, 20))   # its image is missing
    failed = _run_script(f'--dataset_dir={bad}', f'--output_dir={bad / "out"}')
    assert failed.returncode == 1
    assert 'excluded: Annotations/only.xml: image not found' in failed.stdout
    assert failed.stderr.strip().splitlines()[-1].startswith('tf_convert_data.py: error: ')
    assert 'no usable sample' in failed.stderr


def test_script_error_line_names_the_program():
    missing = _run_script()
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == ('tf_convert_data.py: error: --dataset_dir is required '
                                                       '(the folder holding Annotations/ and JPEGImages/)')


def test_output_name_takes_every_annotation_as_ssd_tensorflows_converter_does(tmp_path):
    """VOC2007's trainval folder lists train.txt (half of it): --output_name=voc_2007_train reads no list."""
    for stem in ('a', 'b', 'c'):
        write_sample(tmp_path, stem, [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    os.makedirs(tmp_path / 'ImageSets' / 'Main')
    (tmp_path / 'ImageSets' / 'Main' / 'train.txt').write_text('a\n')
    (tmp_path / 'ImageSets' / 'Main' / 'trainval.txt').write_text('a\nb\n')
    ssd_tensorflow = _run_script(f'--dataset_dir={tmp_path}', f'--output_dir={tmp_path / "out"}',
                                 '--output_name=voc_2007_train')
    assert ssd_tensorflow.returncode == 0, ssd_tensorflow.stderr
    assert ssd_tensorflow.stdout.splitlines()[0].endswith(
        f"(dataset voc_2007; split 'train': every annotation in {tmp_path / 'Annotations'}, as SSD-Tensorflow's "
        f"converter (--output_name))")
    assert dataset_info.load_dataset_info(str(tmp_path / 'out')).num_samples == {'train': 3}
    listed = _run_script(f'--dataset_dir={tmp_path}', f'--output_dir={tmp_path / "listed"}', '--split_name=train')
    assert listed.stdout.splitlines()[0].endswith(f"images listed in {tmp_path / 'ImageSets' / 'Main' / 'train.txt'})")
    assert dataset_info.load_dataset_info(str(tmp_path / 'listed')).num_samples == {'train': 1}


def test_labels_txt_in_the_dataset_folder_sets_the_class_order(tmp_path):
    """README section 1's optional IMAGE/labels.txt: read without --labels_file, and said to be read."""
    write_sample(tmp_path, 'a', [('can', 1, 1, 9, 9, ''), ('bag', 2, 2, 9, 9, '')], image=jpeg_bytes(20, 20),
                 size=(20, 20))
    (tmp_path / 'labels.txt').write_text('can\nbag\n')
    beside = _run_script(f'--dataset_dir={tmp_path}', f'--output_dir={tmp_path / "out"}')
    assert f'Class names from {tmp_path / "labels.txt"}, in its order (label 1 first)' in beside.stdout
    assert dataset_info.load_dataset_info(str(tmp_path / 'out')).class_names == ['none', 'can', 'bag']
    (tmp_path / 'other.txt').write_text('bag\ncan\n')
    chosen = _run_script(f'--dataset_dir={tmp_path}', f'--output_dir={tmp_path / "chosen"}',
                         f'--labels_file={tmp_path / "other.txt"}')
    assert 'Class names from' not in chosen.stdout
    assert dataset_info.load_dataset_info(str(tmp_path / 'chosen')).class_names == ['none', 'bag', 'can']


def test_labels_file_with_a_byte_order_mark_keeps_its_first_class(tmp_path):
    """Windows Notepad saves UTF-8 with a BOM; it must not become part of the first class name."""
    labels = tmp_path / 'labels.txt'
    labels.write_bytes(b'\xef\xbb\xbfcoke can\nchips\n')
    assert dataset_info.read_labels_file(str(labels)) == ['coke can', 'chips']


def test_hash_is_a_comment_only_at_the_start_of_a_labels_line(tmp_path):
    labels = tmp_path / 'labels.txt'
    labels.write_text('# drinks\n  # crisps below\nchips #2\ncola\n')
    assert dataset_info.read_labels_file(str(labels)) == ['chips #2', 'cola']


def test_class_typed_like_a_labels_file_name_is_pointed_at_it(tmp_path):
    write_sample(tmp_path, 'a', [('coke can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(tmp_path, 'b', [('coke_can', 1, 1, 9, 9, ''), ('jar', 1, 1, 9, 9, '')], image=jpeg_bytes(21, 20),
                 size=(21, 20))
    write_sample(tmp_path, 'c', [('chips', 1, 1, 9, 9, '')], image=jpeg_bytes(22, 20), size=(22, 20))
    _, summary = convert(tmp_path, class_names=['Coke Can', 'chips'])
    assert ("  2 image(s) left out for classes not in the label list ('coke can' in 1, 'coke_can' in 1, 'jar' in 1); "
            "add those classes to the labels file to keep the images; 'coke can': did you mean 'Coke Can' (labels "
            "file)?; 'coke_can': did you mean 'Coke Can' (labels file)?") in summary.splitlines()


@pytest.mark.parametrize('largest, warned', [(1.0, True), (2, False)])
def test_box_coordinates_all_within_0_and_1_are_warned_about_as_normalised(tmp_path, largest, warned):
    write_sample(tmp_path, 'a', [('can', 0.1, 0.2, 0.5, 0.6, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(tmp_path, 'b', [('can', 0, 0.25, largest, 0.75, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    _, summary = convert(tmp_path)
    line = ('  warning: Annotations: every box coordinate is 1 or less: they look normalised to 0..1, while Pascal '
            'VOC gives pixels; the boxes cover at most 1 pixel')
    assert (line in summary.splitlines()) == warned
    assert (line in (tmp_path / 'out' / voc_to_tfrecords.REPORT_FILENAME).read_text()) == warned


def test_annotation_with_an_uppercase_extension_is_read(tmp_path):
    write_sample(tmp_path, 'img_007', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    os.rename(tmp_path / 'Annotations' / 'img_007.xml', tmp_path / 'Annotations' / 'img_007.XML')
    result, summary = convert(tmp_path)
    assert result.info.num_samples == {'train': 1} and result.issues == [], summary
    assert result.info.boxes_per_class == {'can': 1}


def test_classes_of_the_label_list_without_a_box_are_warned_about(tmp_path):
    write_sample(tmp_path, 'a', [('coke can', 1, 1, 9, 9, ''), ('chips', 2, 2, 9, 9, '')], image=jpeg_bytes(20, 20),
                 size=(20, 20))
    result, summary = convert(tmp_path, class_names=['__background__', 'coke can', 'chips', 'sprite'])
    assert result.info.boxes_per_class == {'__background__': 0, 'coke can': 1, 'chips': 1, 'sprite': 0}
    assert ("  warning: the class list given: 2 class(es) with 0 boxes in the converted data: '__background__', "
            "'sprite'; the model would train classes it never sees (annotate them, or drop them from the class "
            "list)") in summary.splitlines()
    _, summary = convert(tmp_path, class_names=['coke can', 'chips'])
    assert 'with 0 boxes' not in summary


def test_images_without_an_annotation_are_counted_and_listed(tmp_path):
    write_sample(tmp_path, 'a', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(tmp_path, 'b', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20),
                 filename='photo_b.jpg')                                  # named by b.xml's <filename>
    (tmp_path / 'JPEGImages' / 'never_saved.jpg').write_bytes(jpeg_bytes(20, 20))
    (tmp_path / 'JPEGImages' / 'shelf.PNG').write_bytes(b'any bytes')
    (tmp_path / 'JPEGImages' / 'notes.txt').write_text('not an image')
    result, summary = convert(tmp_path)
    assert result.info.num_samples == {'train': 2}
    assert 'excluded 0, unannotated 2, repaired 0,' in summary.splitlines()[0]
    report = (tmp_path / 'out' / voc_to_tfrecords.REPORT_FILENAME).read_text().splitlines()
    hint = 'left out (a background-only image needs an XML with no <object>)'
    assert [line for line in report if 'unannotated: ' in line] == [
        f'  unannotated: JPEGImages/never_saved.jpg: no Annotations/never_saved.xml: {hint}',
        f'  unannotated: JPEGImages/shelf.PNG: no Annotations/shelf.xml: {hint}']


def test_split_list_mistakes_are_named(tmp_path):
    _folder(tmp_path, {f'img_{index:03d}': ['can'] for index in range(8)})
    lists = tmp_path / 'ImageSets' / 'Main'
    lists.mkdir(parents=True)
    (lists / 'train.txt').write_text('img_000\nimg_001.jpg\nimg_002\nimg_003\nimg_004\nimg_005\nimg_006\nimg_007\n')
    (lists / 'test.txt').write_text('img_007\nimg_006\nimg_005\nimg_004\nimg_003\nimg_002\n')   # all in train
    (lists / 'val.txt').write_text('img_098\nimg_099\n')                                           # none exists
    result, summary = convert(tmp_path)
    assert result.info.num_samples == {'test': 6, 'train': 8, 'val': 0}     # img_001.jpg is img_001
    lines = summary.splitlines()
    assert ('  warning: ImageSets/Main/test.txt: 6 image(s) also in ImageSets/Main/train.txt (img_002, img_003, '
            'img_004, img_005, img_006, ...): the test mAP would include training images') in lines
    assert ("  warning: ImageSets/Main/val.txt: split 'val' has 0 images: none of its entries could be used (see the "
            "excluded lines)") in lines
    assert '  excluded: Annotations/img_099.xml: listed in ImageSets/Main/val.txt, but does not exist' in lines
    assert result.count('warning') == 2 and result.count('excluded') == 2


def test_cvat_default_list_alone_is_no_split_list(tmp_path):
    """CVAT's VOC export lists every image in ImageSets/Main/default.txt; the normal split applies."""
    _folder(tmp_path, {'a': ['can'], 'b': ['can']})
    os.makedirs(tmp_path / 'ImageSets' / 'Main')
    (tmp_path / 'ImageSets' / 'Main' / 'default.txt').write_text('a\nb\n')
    done = _run_script(f'--dataset_dir={tmp_path}', f'--output_dir={tmp_path / "out"}', '--validation_fraction=0.5')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith(
        f"(dataset commodity; split 'train': every annotation in {tmp_path / 'Annotations'}; "
        f"{tmp_path / 'ImageSets' / 'Main' / 'default.txt'}, the only list, names every image (CVAT's export): no "
        f"split list)")
    assert dataset_info.load_dataset_info(str(tmp_path / 'out')).num_samples == {'train': 1, 'test': 1}
    (tmp_path / 'ImageSets' / 'Main' / 'test.txt').write_text('b\n')        # with another list, it is one
    assert plan_splits(str(tmp_path)) == {'default': ['a', 'b'], 'test': ['b']}


def test_filename_naming_another_image_and_two_annotations_of_one_image_are_warned_about(tmp_path):
    write_sample(tmp_path, 'img_002', [('can', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(tmp_path, 'img_003', [('can', 2, 2, 9, 9, '')], image=jpeg_bytes(21, 20), size=(21, 20))
    write_sample(tmp_path, 'img_004', [('can', 3, 3, 9, 9, '')], size=(20, 20),
                 filename='img_002.jpg')                   # copied from img_002.xml, <filename> left
    (tmp_path / 'JPEGImages' / 'img_004.jpg').write_bytes(jpeg_bytes(22, 20))
    write_sample(tmp_path, 'img_005', [('can', 3, 3, 9, 9, '')], size=(23, 20), filename='photo_5.jpg')
    (tmp_path / 'JPEGImages' / 'photo_5.jpg').write_bytes(jpeg_bytes(23, 20))   # no img_005 image: no warning
    result, summary = convert(tmp_path)
    warnings = [str(issue) for issue in result.issues if issue.kind == 'warning']
    assert warnings == [
        '  warning: Annotations/img_004.xml: <filename> names img_002.jpg, though img_004.jpg exists too: the boxes '
        'go on img_002.jpg',
        '  warning: Annotations/img_004.xml: JPEGImages/img_002.jpg is also the image of Annotations/img_002.xml: '
        'two records of one image'], summary
    assert result.info.num_samples == {'train': 4}


@pytest.mark.parametrize('image_format, mode, colour, note', [
    ('WEBP', 'RGB', (200, 60, 30), 'RGB WEBP, re-encoded as JPEG'),
    ('BMP', 'RGB', (200, 60, 30), 'RGB BMP, re-encoded as JPEG'),
    ('TIFF', 'RGB', (200, 60, 30), 'RGB TIFF, re-encoded as JPEG'),
    ('GIF', 'P', 7, 'P GIF converted to RGB, re-encoded as JPEG')])
def test_other_image_formats_pillow_reads_are_stored_as_jpeg(tmp_path, image_format, mode, colour, note):
    image = Image.new(mode, (40, 24), colour)
    if mode == 'P':
        image.putpalette([200, 60, 30] * 256)              # every index is (200, 60, 30)
    out = io.BytesIO()
    image.save(out, format=image_format, **({'lossless': True} if image_format == 'WEBP' else {}))
    name = f'p.{image_format.lower()}'
    write_sample(tmp_path, 'p', [('can', 8, 8, 24, 16, '')], image=out.getvalue(), size=(40, 24), filename=name)
    result, summary = convert(tmp_path)
    record, = read_records(result.shards['train'])
    assert record['image/format'] == b'JPEG' and record['pixels'].shape == (24, 40, 3)
    assert np.all(np.abs(record['pixels'].astype(int) - [200, 60, 30]) < 8)
    assert f'  converted: Annotations/p.xml: {note}' in summary.splitlines()
    np.testing.assert_allclose(record_box(record), (8, 8, 24, 16), atol=1e-4)
