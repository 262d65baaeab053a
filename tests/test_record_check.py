"""The integrity check: every shard read once, CRCs and framing checked, counts against dataset_info.json."""
import os
import re
import struct

import pytest
import tensorflow.compat.v1 as tf

from datasets import dataset_info, record_check
from utils.errors import UserError

PER_SHARD = [5, 5, 3]


def write_shard(path, count, start=0):
    with tf.io.TFRecordWriter(path) as writer:
        for index in range(start, start + count):
            writer.write(b'record %03d ' % index + bytes(range(256)) * (1 + index % 3))


@pytest.fixture
def split(tmp_path):
    """tmp_path/toy_train_00[0-2].tfrecord (5, 5, 3 records) and a dataset_info.json counting 13."""
    paths = [str(tmp_path / f'toy_train_{shard:03d}.tfrecord') for shard in range(len(PER_SHARD))]
    for shard, (path, count) in enumerate(zip(paths, PER_SHARD)):
        write_shard(path, count, start=5 * shard)
    dataset_info.write_dataset_info(str(tmp_path), dataset_info.DatasetInfo(
        name='toy', class_names=['none', 'thing'], num_samples={'train': sum(PER_SHARD)}))
    return str(tmp_path), paths


def record_offsets(path):
    """Byte offset of each record's header."""
    with open(path, 'rb') as source:
        data = source.read()
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += 16 + struct.unpack('<Q', data[offset:offset + 8])[0]
    return offsets, data


def check_error(directory):
    with pytest.raises(UserError) as error:
        record_check.check_split(directory, 'train')
    message = str(error.value)
    assert '\n' not in message
    assert message.endswith(f'rebuild it with the conversion that made it, e.g. python tf_convert_data.py '
                            f'--dataset_dir=<your VOC folder> --output_dir={directory} --dataset_name=toy '
                            f'(README section 2)')
    return message


def test_sound_split_is_counted(split):
    directory, paths = split
    result = record_check.check_split(directory, 'train')
    assert (result.num_shards, result.num_records) == (3, 13)
    assert result.num_bytes == sum(os.path.getsize(path) for path in paths)


def test_masked_crc32c_matches_the_record_headers_tensorflow_writes(split):
    _, paths = split
    offsets, data = record_offsets(paths[0])
    for offset in offsets:
        length, crc = struct.unpack('<QI', data[offset:offset + 12])
        assert record_check.masked_crc32c(data[offset:offset + 8]) == crc
        assert record_check.masked_crc32c(data[offset + 12:offset + 12 + length]) == struct.unpack(
            '<I', data[offset + 12 + length:offset + 16 + length])[0]


def test_truncated_shard_names_the_file_and_record(split):
    directory, paths = split
    offsets, data = record_offsets(paths[1])
    with open(paths[1], 'wb') as target:
        target.write(data[:offsets[3] + 40])                    # records 0-2 whole, record 3 cut short
    message = check_error(directory)
    assert re.match(rf'^{re.escape(paths[1])}: truncated at record 3 \(40 of its \d+ bytes present\); ', message)


def test_flipped_data_byte_is_a_crc_mismatch(split):
    directory, paths = split
    offsets, data = record_offsets(paths[2])
    damaged = bytearray(data)
    damaged[offsets[1] + 12 + 30] ^= 0x04                      # a byte inside record 1's data
    with open(paths[2], 'wb') as target:
        target.write(bytes(damaged))
    assert check_error(directory).startswith(f'{paths[2]}: CRC mismatch at record 1; ')


def test_flipped_length_byte_is_a_crc_mismatch_not_a_truncation(split):
    directory, paths = split
    offsets, data = record_offsets(paths[0])
    damaged = bytearray(data)
    damaged[offsets[2] + 5] ^= 0x01                            # a high byte of record 2's length
    with open(paths[0], 'wb') as target:
        target.write(bytes(damaged))
    assert check_error(directory).startswith(f'{paths[0]}: CRC mismatch at record 2 (its length field); ')


def test_shard_with_fewer_records_is_named(split):
    directory, paths = split
    write_shard(paths[1], 4)
    assert check_error(directory).startswith(
        f"{paths[1]}: 4 records where the other shards hold 5; split 'train' count differs from "
        f"dataset_info.json: 12 vs 13 records; ")


@pytest.mark.parametrize('deleted', [0, 1])
def test_deleted_shard_is_named(split, deleted):
    directory, paths = split
    os.remove(paths[deleted])
    assert check_error(directory).startswith(
        f"{paths[deleted]}: missing (1 shard(s) absent from the numbering); split 'train' count differs from "
        f"dataset_info.json: 8 vs 13 records; ")


def test_a_deleted_shard_of_a_split_past_999_shards_is_named_as_written(tmp_path):
    """'%03d' numbering: shards _000 to _999, then _1000; _005 deleted is named _005, not _0005."""
    shards = [str(tmp_path / f'toy_train_{number:03d}.tfrecord') for number in range(1002) if number != 5]
    assert record_check._missing_shards(shards) == [str(tmp_path / 'toy_train_005.tfrecord')]


def test_short_last_shard_names_the_split(split):
    directory, paths = split
    write_shard(paths[2], 2)
    pattern = os.path.join(directory, 'toy_train_*.tfrecord')
    assert check_error(directory).startswith(
        f"{pattern}: split 'train' count differs from dataset_info.json: 12 vs 13 records; ")


def test_folder_without_dataset_info_is_checked_record_by_record(split):
    directory, paths = split
    os.remove(os.path.join(directory, dataset_info.INFO_FILENAME))
    write_shard(paths[2], 2)
    assert record_check.check_split(directory, 'train').num_records == 12
    with open(paths[2], 'r+b') as target:
        target.truncate(os.path.getsize(paths[2]) - 1)
    with pytest.raises(UserError, match=rf'^{re.escape(paths[2])}: truncated at record 1 .*--dataset_name=toy '):
        record_check.check_split(directory, 'train')
