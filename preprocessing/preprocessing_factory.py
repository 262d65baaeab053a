"""Preprocessing functions by network name (the TF-Slim factory pattern)."""
from preprocessing import ssd_vgg_preprocessing
from utils.errors import UserError

_VGG_NETWORKS = ('ssd_300_vgg', 'ssd_512_vgg')


def get_preprocessing(name, is_training):
    """-> fn(image, labels, boxes, difficult, out_shape) returning (image, labels, boxes, difficult).

    Both VGG SSD networks use ssd_vgg_preprocessing: training augmentation (which also takes seed=, see
    preprocess_for_train) or the evaluation resize. UserError for an unknown name.
    """
    if name not in _VGG_NETWORKS:
        raise UserError('--preprocessing_name=%s: no such preprocessing (known: %s)' % (name, ', '.join(_VGG_NETWORKS)))
    if is_training:
        return ssd_vgg_preprocessing.preprocess_for_train
    return ssd_vgg_preprocessing.preprocess_for_eval
