"""Integrity check of a split's TFRecord shards before training or evaluation reads them.

Every shard is read once with TensorFlow's record reader, which checks each record's framing and both
CRCs; the records counted are then compared with dataset_info.json. A damaged or short shard raises
UserError with one line naming the file, what is wrong and how to rebuild it, instead of a traceback at
whatever step first draws the record. tf.io.tf_record_iterator is used because it read a VOC-sized split
(16k records, 1.6 GB) about three times faster than a tf.data.TFRecordDataset graph (bench/record_check.py).

A TFRecord is: uint64 length, uint32 masked crc32c of the length, the data, uint32 masked crc32c of the
data (all little-endian). TensorFlow's error says only "corrupted" or "truncated" and a byte offset, so
on an error the shard's framing is walked here to name the record and tell the two apart.
"""
import dataclasses
import os
import re
import struct
import time

import tensorflow.compat.v1 as tf

from datasets import dataset_info
from utils.errors import UserError

_HEADER = struct.Struct('<QI')   # length, masked crc32c of the length
_FOOTER_SIZE = 4                 # masked crc32c of the data


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def masked_crc32c(data):
    """TFRecord's checksum: crc32c (Castagnoli) of `data`, rotated and offset. Pure Python: use it on a
    few bytes (a record's length field), not on image data."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class SplitCheck:
    """What check_split read: the split, its shards, records, bytes and the seconds it took."""
    split_name: str
    num_shards: int
    num_records: int
    num_bytes: int
    seconds: float

    def __str__(self):
        return (f'Records checked: split {self.split_name!r}, {self.num_shards} shard(s), {self.num_records} records, '
                f'{self.num_bytes / 1e6:.1f} MB in {self.seconds:.1f} s')


def locate_fault(path, index):
    """'truncated at record N' or 'CRC mismatch at record N' for record `index` (0-based), the first one
    TensorFlow could not read: the records before it are known to be sound, so their lengths are trusted."""
    with open(path, 'rb') as shard:
        size, offset = os.fstat(shard.fileno()).st_size, 0
        for _ in range(index):
            shard.seek(offset)
            length, _ = _HEADER.unpack(shard.read(_HEADER.size))
            offset += _HEADER.size + length + _FOOTER_SIZE
        shard.seek(offset)
        header = shard.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return f'truncated at record {index}'
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
        return f'CRC mismatch at record {index} (its length field)'
    if offset + _HEADER.size + length + _FOOTER_SIZE > size:
        needed = _HEADER.size + length + _FOOTER_SIZE
        return f'truncated at record {index} ({size - offset} of its {needed} bytes present)'
    return f'CRC mismatch at record {index}'


def count_records(path, rebuild_hint):
    """Records in one shard, all read and CRC-checked; UserError naming the shard and the first bad record."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel('ERROR')   # tf_record_iterator's deprecation notice (it is the fast reader here)
    try:
        records = tf.io.tf_record_iterator(path)
    finally:
        logger.setLevel(level)
    count = 0
    try:
        for _ in records:
            count += 1
    except tf.errors.DataLossError:
        raise UserError(f'{path}: {locate_fault(path, count)}; {rebuild_hint}') from None
    except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as err:
        raise UserError(f'{path}: cannot read ({err.message.splitlines()[0]})') from None
    return count


def rebuild_hint(dataset_dir, dataset_name):
    """The advice every integrity error ends with."""
    return (f'rebuild it with the conversion that made it, e.g. python tf_convert_data.py '
            f'--dataset_dir=<your VOC folder> --output_dir={dataset_dir} --dataset_name={dataset_name} '
            f'(README section 2)')


_SHARD_NUMBER = re.compile(r'_(\d+)\.tfrecord$')


def _short_shard(counts):
    """The one shard (not the last, which holds the remainder) with fewer records than the fullest, or None."""
    paths = sorted(counts)
    fullest = max(counts.values())
    short = [path for path in paths[:-1] if counts[path] < fullest]
    return short[0] if len(short) == 1 else None


def _missing_shards(shards):
    """The shard paths absent from the numbering of `shards` ('..._000.tfrecord', '..._002...': '..._001...'),
    below its highest number: a deleted shard. One deleted after the highest cannot be told."""
    numbers = {int(_SHARD_NUMBER.search(path).group(1)): path for path in shards}
    last = numbers[max(numbers)]
    digits = min(len(_SHARD_NUMBER.search(path).group(1)) for path in shards)   # '%03d' writes _999, then _1000
    return [_SHARD_NUMBER.sub(f'_{number:0{digits}d}.tfrecord', last)
            for number in range(max(numbers)) if number not in numbers]


def check_split(dataset_dir, split_name, dataset_name=None):
    """Read every shard of the split once; compare the record count with dataset_info.json (when the folder
    has one: SSD-Tensorflow's record folders without it are checked record by record only).

    Returns a SplitCheck; raises UserError (one line) for a missing, truncated, corrupted or short shard."""
    start = time.time()
    shards = dataset_info.list_shards(dataset_dir, split_name, dataset_name)
    has_info = os.path.isfile(os.path.join(dataset_dir, dataset_info.INFO_FILENAME))
    info = dataset_info.load_dataset_info(dataset_dir) if has_info else None
    name = info.name if info else (dataset_name or re.sub(rf'_{re.escape(split_name)}_\d+\.tfrecord$', '',
                                                           os.path.basename(shards[0])))
    hint = rebuild_hint(dataset_dir, name)
    counts = {path: count_records(path, hint) for path in shards}
    total = sum(counts.values())
    expected = info.num_samples.get(split_name) if info else None
    if expected is not None and total != expected:
        missing, suspect = _missing_shards(shards), _short_shard(counts)
        if missing:
            where = f'{missing[0]}: missing ({len(missing)} shard(s) absent from the numbering); '
        elif suspect:
            where = f'{suspect}: {counts[suspect]} records where the other shards hold {max(counts.values())}; '
        else:
            where = f'{os.path.join(dataset_dir, f"{name}_{split_name}_*.tfrecord")}: '
        raise UserError(f'{where}split {split_name!r} count differs from {dataset_info.INFO_FILENAME}: '
                        f'{total} vs {expected} records; {hint}')
    return SplitCheck(split_name=split_name, num_shards=len(shards), num_records=total,
                      num_bytes=sum(os.path.getsize(path) for path in shards), seconds=time.time() - start)
