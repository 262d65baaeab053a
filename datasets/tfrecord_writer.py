"""Writing and counting TFRecord shards: tf.train.Example with SSD-Tensorflow's feature keys
(datasets/tfrecord_schema.py), shards that appear only when complete (reading them back: datasets/split_boxes.py).

Box coordinates are VOC pixel values divided by the real image size, exactly as SSD-Tensorflow did:
y / height, x / width with no 1-based offset (VOC's xmin = 1 is the first pixel, so left/top edges sit
at most 1 px right/below the true edge, immaterial at IoU 0.5).
"""
import os
import re

import tensorflow.compat.v1 as tf

from datasets import tfrecord_schema as keys

PARTIAL_SUFFIX = '.partial'


def _feature(kind, values):
    """tf.train.Feature of kind 'int64' | 'float' | 'bytes' holding the list values."""
    list_type = {'int64': tf.train.Int64List, 'float': tf.train.FloatList, 'bytes': tf.train.BytesList}[kind]
    return tf.train.Feature(**{f'{kind}_list': list_type(value=values)})


def make_example(encoded, image_format, height, width, objects, class_index, box_frame=None):
    """tf.train.Example with SSD-Tensorflow's keys for an image of height x width pixels; boxes normalised:
    x / width, y / height, or by box_frame (height, width) when they were drawn on the image at another
    resolution (a photo stored downscaled)."""
    frame_height, frame_width = box_frame or (height, width)

    def column(attribute, scale):
        return _feature('float', [getattr(obj, attribute) / scale for obj in objects])

    def per_object(kind, value_of):
        return _feature(kind, [value_of(obj) for obj in objects])
    return tf.train.Example(features=tf.train.Features(feature={
        keys.HEIGHT: _feature('int64', [height]), keys.WIDTH: _feature('int64', [width]),
        keys.CHANNELS: _feature('int64', [3]), keys.SHAPE: _feature('int64', [height, width, 3]),
        keys.FORMAT: _feature('bytes', [image_format.encode()]),
        keys.ENCODED: _feature('bytes', [encoded]),
        **{key: column(coordinate, frame_height if coordinate[0] == 'y' else frame_width)
           for coordinate, key in keys.BOX_KEYS.items()},
        keys.LABEL: per_object('int64', lambda obj: class_index[obj.name]),
        keys.LABEL_TEXT: per_object('bytes', lambda obj: obj.name.encode('utf-8')),
        keys.DIFFICULT: per_object('int64', lambda obj: obj.difficult),
        keys.TRUNCATED: per_object('int64', lambda obj: obj.truncated),
    }))


class ShardWriter:
    """Writes records into <name>_<split>_<NNN>.tfrecord shards of samples_per_file records each.

    Each shard is written as '<shard>.partial' and os.replace'd onto its name once closed, so no
    '*.tfrecord' ever holds a half-written shard; on an exception the partial file is deleted."""

    def __init__(self, output_dir, dataset_name, split_name, samples_per_file):
        self._prefix = os.path.join(output_dir, f'{dataset_name}_{split_name}_')
        self._samples_per_file = samples_per_file
        self._writer, self._count, self.paths = None, 0, []

    def write(self, serialized):
        if self._writer is None:
            self.paths.append(f'{self._prefix}{len(self.paths):03d}.tfrecord')
            self._writer = tf.io.TFRecordWriter(self.paths[-1] + PARTIAL_SUFFIX)
        self._writer.write(serialized)
        self._count += 1
        if self._count == self._samples_per_file:
            self._finish_shard()

    def _finish_shard(self):
        self._writer.close()
        os.replace(self.paths[-1] + PARTIAL_SUFFIX, self.paths[-1])
        self._writer, self._count = None, 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self._writer is None:
            return
        if exc_type is None:
            self._finish_shard()
            return
        self._writer.close()
        os.remove(self.paths.pop() + PARTIAL_SUFFIX)


def remove_stale_shards(output_dir, dataset_name, split_name, keep):
    """Delete this dataset's older shards of split_name (and leftover .partial files) not in keep."""
    pattern = re.compile(rf'{re.escape(dataset_name)}_{re.escape(split_name)}_\d+\.tfrecord'
                         rf'({re.escape(PARTIAL_SUFFIX)})?')
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if pattern.fullmatch(name) and path not in keep:
            os.remove(path)

