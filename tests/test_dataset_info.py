"""dataset_info.json round trip and validation, built-in VOC lists, shard listing, label files."""
import json
import os

import pytest

from datasets import dataset_info
from datasets.dataset_info import DatasetInfo
from utils.errors import UserError


def test_write_load_round_trip_leaves_no_temp_file(tmp_path):
    info = DatasetInfo('shop', ['none', 'cola', 'chips'], {'train': 7, 'test': 2}, {'cola': 9, 'chips': 0})
    dataset_info.write_dataset_info(str(tmp_path), info)
    assert os.listdir(tmp_path) == ['dataset_info.json']
    loaded = dataset_info.load_dataset_info(str(tmp_path))
    assert loaded == info and loaded.num_classes == 3
    assert json.loads((tmp_path / 'dataset_info.json').read_text())['num_classes'] == 3
    assert dataset_info.load_dataset_info(str(tmp_path / 'dataset_info.json')) == info


@pytest.mark.parametrize('content, message', [
    (None, 'not found'),
    ('{"name": "x", ', 'not valid JSON'),
    ('[1, 2]', 'expected a JSON object'),
    ('{"name": "x", "class_names": ["cola", "chips"], "num_samples": {"train": 1}}', "starting with 'none'"),
    ('{"name": "x", "class_names": ["none", "cola", "cola"], "num_samples": {"train": 1}}', 'distinct'),
    ('{"name": "x", "class_names": ["none", "cola"], "num_samples": {"train": -1}}', 'num_samples'),
    ('{"name": "x", "class_names": ["none", "cola"], "num_samples": {"train": 1}, "boxes_per_class": []}',
     'boxes_per_class'),
    ('{"class_names": ["none", "cola"], "num_samples": {"train": 1}}', 'name must be'),
])
def test_load_rejects_missing_or_invalid_json_naming_the_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / 'dataset_info.json').write_text(content)
    with pytest.raises(UserError, match=message) as raised:
        dataset_info.load_dataset_info(str(tmp_path))
    assert str(tmp_path / 'dataset_info.json') in str(raised.value)


def test_builtin_voc_lists_follow_ssd_tensorflow_label_ids():
    assert len(dataset_info.VOC_CLASSES) == 20
    names = dataset_info.with_background(dataset_info.BUILTIN_CLASS_LISTS['pascalvoc_2007'])
    # SSD-Tensorflow's VOC_LABELS: none 0, aeroplane 1, bottle 5, person 15, tvmonitor 20.
    assert [names.index(n) for n in ('none', 'aeroplane', 'bottle', 'person', 'tvmonitor')] == [0, 1, 5, 15, 20]
    assert dataset_info.builtin_class_names('pascalvoc') == list(dataset_info.VOC_CLASSES)
    assert dataset_info.builtin_class_names('commodity') is None


def test_resolve_legacy_directory_by_builtin_name(tmp_path):
    legacy = dataset_info.resolve_dataset_info(str(tmp_path), 'pascalvoc_2007')
    assert legacy.num_classes == 21 and legacy.num_samples == {'train': 5011, 'test': 4952}
    with pytest.raises(UserError, match="'commodity' is not built in"):
        dataset_info.resolve_dataset_info(str(tmp_path), 'commodity')
    with pytest.raises(UserError) as raised:                     # no name given: no "None" in the message
        dataset_info.resolve_dataset_info(str(tmp_path), None)
    assert str(raised.value) == (f'{tmp_path / "dataset_info.json"}: not found; convert the images with '
                                 'tf_convert_data.py (records of SSD-Tensorflow\'s VOC converter: pass '
                                 '--dataset_name=pascalvoc_2007 or pascalvoc_2012)')
    with pytest.raises(UserError, match=f'^{tmp_path / "absent"}: dataset directory not found$'):
        dataset_info.resolve_dataset_info(str(tmp_path / 'absent'), 'pascalvoc_2007')
    own = DatasetInfo('commodity', ['none', 'can'], {'train': 3})
    dataset_info.write_dataset_info(str(tmp_path), own)
    assert dataset_info.resolve_dataset_info(str(tmp_path), 'commodity') == own
    with pytest.raises(UserError) as raised:                     # another list: refused, not overridden unsaid
        dataset_info.resolve_dataset_info(str(tmp_path), 'pascalvoc_2007')
    assert str(raised.value) == (f"--dataset_name=pascalvoc_2007: {tmp_path} holds the dataset 'commodity' (1 "
                                 f"classes); the flag only names a built-in class list for a folder without "
                                 f"dataset_info.json")


def _touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b'')


def test_list_shards_sorted_and_filtered(tmp_path):
    _touch(tmp_path, 'voc_2007_train_001.tfrecord', 'voc_2007_train_000.tfrecord', 'voc_2007_test_000.tfrecord',
           'voc_2007_trainval_000.tfrecord', 'voc_2007_train_002.tfrecord.partial')
    names = [os.path.basename(p) for p in dataset_info.list_shards(str(tmp_path), 'train')]
    assert names == ['voc_2007_train_000.tfrecord', 'voc_2007_train_001.tfrecord']  # legacy names, no json
    _touch(tmp_path, 'shop_train_000.tfrecord')
    dataset_info.write_dataset_info(str(tmp_path), DatasetInfo('shop', ['none', 'cola'], {'train': 1}))
    assert [os.path.basename(p) for p in dataset_info.list_shards(str(tmp_path), 'train')] == ['shop_train_000.tfrecord']
    assert len(dataset_info.list_shards(str(tmp_path), 'train', dataset_name='voc_2007')) == 2
    assert len(dataset_info.list_shards(str(tmp_path), 'test', dataset_name='voc_2007')) == 1  # not the json's


def test_list_shards_refuses_a_split_the_json_does_not_list(tmp_path):
    _touch(tmp_path, 'shop_train_000.tfrecord', 'shop_test_000.tfrecord')      # test: left by an older run
    dataset_info.write_dataset_info(str(tmp_path), DatasetInfo('shop', ['none', 'cola'], {'train': 1, 'val': 0}))
    with pytest.raises(UserError) as raised:
        dataset_info.list_shards(str(tmp_path), 'test')
    assert str(raised.value) == (f"{tmp_path}: split 'test' is not in dataset_info.json, which lists train, val; "
                                 "tf_convert_data.py writes the splits ImageSets/Main/*.txt name, or without those "
                                 "lists 'train' and, with --validation_fraction=0.2, a 'test' split of a fifth of "
                                 "the images")
    with pytest.raises(UserError, match="split 'test' is not in"):
        dataset_info.list_shards(str(tmp_path), 'test', dataset_name='shop')


def test_list_shards_errors_name_directory_and_split(tmp_path):
    with pytest.raises(UserError, match=r"no TFRecord shards for split 'val' \(expected <name>_val_<NNN>"):
        dataset_info.list_shards(str(tmp_path), 'val')
    with pytest.raises(UserError, match='dataset directory not found'):
        dataset_info.list_shards(str(tmp_path / 'absent'), 'train')


def test_read_labels_file_formats(tmp_path):
    plain = tmp_path / 'labels.txt'
    plain.write_text('cola\n\n# drinks above\nchips  \n')
    assert dataset_info.read_labels_file(str(plain)) == ['cola', 'chips']
    slim_style = tmp_path / 'slim.txt'
    slim_style.write_text('0:none\n1:cola\n2:chips\n')
    assert dataset_info.read_labels_file(str(slim_style)) == ['cola', 'chips']


def test_labels_file_not_in_utf8_says_to_save_it_so(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_bytes('café\nchips\n'.encode('cp1252'))   # Notepad's 'ANSI': 'é' is the one byte 0xe9
    with pytest.raises(UserError) as raised:
        dataset_info.read_labels_file(str(path))
    assert str(raised.value) == (f'{path}: the labels file is not UTF-8 (byte 0xe9 at offset 3); '
                                 'save it with the encoding UTF-8')


@pytest.mark.parametrize('content, message', [('\n# nothing\n', 'lists no class names'),
                                              ('cola\nchips\ncola\n', 'listed twice: cola'),
                                              (None, 'cannot read labels file')])
def test_read_labels_file_errors(tmp_path, content, message):
    path = tmp_path / 'labels.txt'
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        dataset_info.read_labels_file(str(path))
