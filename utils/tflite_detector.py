"""Running a TFLite detector model (deployment/export_tflite.py) with the standard TFLite runtime.

TFLiteDetector.detect returns what net.detect returns for a batch of one image, so detect.py and the tests treat
both alike: boxes clipped to [0, 1], classes 1..C-1 (the op's are 0-based without the background), rows past
num_detections zeroed. The class names, one per line from the background on, are in the text file beside the
model (labels_path).
"""
import contextlib
import os
import re
import warnings

import numpy as np
import tensorflow as tf2

from datasets.dataset_info import class_name
from deployment import tflite_model
from utils import script_setup
from utils.errors import UserError

# tf.lite.Interpreter warns that it moves to the ai_edge_litert package; it still runs these models unchanged.
warnings.filterwarnings('ignore', message=r'\s*Warning: tf.lite.Interpreter is deprecated')
# The runtime's notice on its first run, printed whatever TF_CPP_MIN_LOG_LEVEL says.
_DELEGATE_NOTICE = re.compile(r'^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$')


def labels_path(model_path):
    """The class names file of a model: model.tflite -> model.labels.txt."""
    return os.path.splitext(model_path)[0] + '.labels.txt'


def read_class_names(model_path):
    """The class names saved beside the model (index 0 = background), in the form datasets keep them
    (dataset_info.class_name); UserError when the file is missing or not UTF-8 (an older export's, written in
    the locale's encoding)."""
    path = labels_path(model_path)
    try:
        with open(path, encoding='utf-8') as source:
            return [class_name(line) for line in source if line.strip()]
    except OSError as err:
        raise UserError(f'{path}: cannot read the class names of {model_path} ({err.strerror}); export_tflite.py '
                        f'writes it beside the model') from None
    except UnicodeDecodeError:
        raise UserError(f'{path}: not UTF-8 text; save it as UTF-8 (or export the model again)') from None


class TFLiteDetector:
    """A .tflite detector model loaded in tf.lite.Interpreter (XNNPACK for the float ops)."""

    def __init__(self, model_path, num_threads=None):
        try:
            interpreter = tf2.lite.Interpreter(model_path=model_path, num_threads=num_threads)
        except (ValueError, RuntimeError) as err:
            reason = ' '.join(str(err).split())   # the runtime's message spans lines
            raise UserError(f'{model_path}: not a TFLite model this runtime can load ({reason})') from None
        self._run, self._ran = interpreter.get_signature_runner(), False   # the first run applies the delegate
        self.image_size = tuple(int(side) for side in self._run.get_input_details()['images']['shape'][1:3])
        self.model_path = model_path
        with open(model_path, 'rb') as source:
            try:
                self.postprocess = tflite_model.attributes_of(source.read())   # its post-processing's settings
            except IndexError:
                raise UserError(f'{model_path}: holds no {tflite_model.POSTPROCESS_OP} op: not a detector of '
                                f'deployment/export_tflite.py') from None
        self.num_classes = int(self.postprocess['num_classes']) + 1   # the op's count leaves out the background

    def class_names(self):
        """read_class_names of the model, checked against its class count; UserError when they disagree (a
        .labels.txt of another export beside it)."""
        names = read_class_names(self.model_path)
        if len(names) != self.num_classes:
            raise UserError(f'{labels_path(self.model_path)}: {len(names)} class names with the background, the model '
                            f'has {self.num_classes} classes; export it again (export_tflite.py writes the file)')
        return names

    def detect(self, images):
        """images: float32 [1, h, w, 3] pixels resized by resize_for_eval -> dict of numpy arrays like
        net.detect's: detection_boxes [1, K, 4], detection_scores [1, K], detection_classes [1, K] int64,
        num_detections [1] int32."""
        with contextlib.nullcontext() if self._ran else script_setup.stderr_without(_DELEGATE_NOTICE):
            outputs = self._run(images=np.asarray(images, np.float32))
        self._ran = True
        count = int(outputs['num_detections'][0])
        valid = np.arange(outputs['detection_scores'].shape[1])[None, :] < count
        return {'detection_boxes': np.where(valid[..., None], np.clip(outputs['detection_boxes'], 0., 1.), 0.),
                'detection_scores': np.where(valid, outputs['detection_scores'], 0.),
                'detection_classes': np.where(valid, outputs['detection_classes'].astype(np.int64) + 1, 0),
                'num_detections': np.array([count], np.int32)}
