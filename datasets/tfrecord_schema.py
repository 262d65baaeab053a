"""Feature keys of one record (a tf.train.Example): SSD-Tensorflow's, so its records and ours load alike.

The writer (datasets/tfrecord_writer.py) and the reader (datasets/tfrecord_pipeline.py) both import
these names. Per image: HEIGHT, WIDTH, CHANNELS (int64), SHAPE (int64 x3: height, width, 3), FORMAT
(bytes 'JPEG' | 'PNG'), ENCODED (the image file's bytes). Per object, one value each: BOX_KEYS (float,
normalised by the image size), LABEL (int64, 1..K), LABEL_TEXT (bytes), DIFFICULT, TRUNCATED (int64 0/1).
"""
HEIGHT = 'image/height'
WIDTH = 'image/width'
CHANNELS = 'image/channels'
SHAPE = 'image/shape'
FORMAT = 'image/format'
ENCODED = 'image/encoded'
# Box coordinate -> key, in yxyx order (the order the reader stacks them in).
BOX_KEYS = {coordinate: 'image/object/bbox/' + coordinate for coordinate in ('ymin', 'xmin', 'ymax', 'xmax')}
LABEL = 'image/object/bbox/label'
LABEL_TEXT = 'image/object/bbox/label_text'
DIFFICULT = 'image/object/bbox/difficult'
TRUNCATED = 'image/object/bbox/truncated'
