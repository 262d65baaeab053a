"""Cost of the record integrity check (datasets/record_check.py) on a VOC-sized split, and of alternatives.

    python bench/record_check.py --work_dir=/tmp/record_check_bench --num_records=16000

Writes (once) a synthetic split of --num_records records with random JPEG-sized payloads (30-170 kB, 1.6 GB
for 16k), 200 per shard, with its dataset_info.json; then times reading all of it with each method, from
disk (each shard's pages dropped from the page cache first, posix_fadvise) and from the page cache.
Pure Python's crc32c is too slow to run over the whole split: it is timed on --python_sample_mb and scaled.
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from bench import synthetic_records  # noqa: E402
from datasets import dataset_info, record_check  # noqa: E402

flags.DEFINE_string('work_dir', '/tmp/record_check_bench', 'Where the synthetic split is written (kept).')
flags.DEFINE_integer('num_records', 16000, 'Records in the synthetic split.')
flags.DEFINE_float('python_sample_mb', 8.0, 'MB of records the pure-Python reader is timed on.')
FLAGS = flags.FLAGS
def drop_from_page_cache(paths):
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def tf_data_count(paths):
    """Records counted by a tf.data.TFRecordDataset graph (reduce), shard by shard."""
    with tf.Graph().as_default():
        path = tf.placeholder(tf.string, [])
        count = tf.data.TFRecordDataset(path).reduce(tf.constant(0, tf.int64), lambda total, _: total + 1)
        with tf.Session() as session:
            return sum(int(session.run(count, {path: name})) for name in paths)


def python_read(path, budget_bytes):
    """(bytes, records) read and fully CRC-checked by pure Python, stopping after budget_bytes."""
    done = records = 0
    with open(path, 'rb') as shard:
        while done < budget_bytes:
            header = shard.read(12)
            if not header:
                break
            length, length_crc = struct.unpack('<QI', header)
            data, (data_crc,) = shard.read(length), struct.unpack('<I', shard.read(4))
            if record_check.masked_crc32c(header[:8]) != length_crc or record_check.masked_crc32c(data) != data_crc:
                raise ValueError(f'{path}: CRC mismatch at record {records}')
            done, records = done + length + 16, records + 1
    return done, records


def timed(fn, paths, cold):
    if cold:
        drop_from_page_cache(paths)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(_):
    tf.disable_v2_behavior()
    directory = os.path.join(FLAGS.work_dir, str(FLAGS.num_records))
    if not os.path.isfile(os.path.join(directory, dataset_info.INFO_FILENAME)):
        synthetic_records.write_split(directory, FLAGS.num_records)
    paths = dataset_info.list_shards(directory, 'train')
    size_gb = sum(os.path.getsize(path) for path in paths) / 1e9
    print(f'{FLAGS.num_records} records, {len(paths)} shards, {size_gb:.2f} GB, {os.cpu_count()} CPUs')
    print('| method | from disk (s) | from page cache (s) | GB/s (cache) |')
    print('|---|---|---|---|')
    methods = [('record_check.check_split (tf.io.tf_record_iterator + count)',
                lambda: record_check.check_split(directory, 'train')),
               ('tf.data.TFRecordDataset reduce (graph)', lambda: tf_data_count(paths))]
    for name, fn in methods:
        cold, warm = timed(fn, paths, True), timed(fn, paths, False)
        print(f'| {name} | {cold:.2f} | {warm:.2f} | {size_gb / warm:.2f} |')
    budget = int(FLAGS.python_sample_mb * 1e6)
    start = time.perf_counter()
    done, _ = python_read(paths[0], budget)
    scaled = (time.perf_counter() - start) * size_gb * 1e9 / done
    print(f'| pure Python framing + masked crc32c (timed on {done / 1e6:.0f} MB, scaled) | - | {scaled:.0f} | '
          f'{size_gb / scaled:.4f} |')


if __name__ == '__main__':
    app.run(main)
