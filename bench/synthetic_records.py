"""A synthetic VOC-sized split for the record benches: random image-sized payloads, written as TFRecords."""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from datasets import dataset_info

PER_SHARD = 200


def write_split(directory, num_records, seed=0, extra_features=None):
    """Shards bench_train_NNN.tfrecord of records holding one random payload each (plus the features
    extra_features(rng) returns, when given), and dataset_info.json."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, 400_000, dtype=np.uint8).tobytes()
    for shard in range(-(-num_records // PER_SHARD)):
        with tf.io.TFRecordWriter(os.path.join(directory, f'bench_train_{shard:03d}.tfrecord')) as writer:
            for _ in range(min(PER_SHARD, num_records - shard * PER_SHARD)):
                start, size = int(rng.integers(0, 200_000)), int(rng.integers(30_000, 170_000))
                payload = tf.train.BytesList(value=[pool[start:start + size]])
                feature = {'image/encoded': tf.train.Feature(bytes_list=payload),
                           **(extra_features(rng) if extra_features else {})}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    dataset_info.write_dataset_info(directory, dataset_info.DatasetInfo(
        name='bench', class_names=['none', 'thing'], num_samples={'train': num_records}))
