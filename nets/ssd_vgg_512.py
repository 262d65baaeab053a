"""SSD512 with a VGG-16 trunk: SSD300's layers plus block12, for 512x512 inputs (scope 'ssd_512_vgg').

Feature layers: block4 (64x64), block7 (32), block8 (16), block9 (8), block10 (4), block11 (2),
block12 (1); 24564 anchors. Layout and names as SSD-Tensorflow's ssd_vgg_512.py: every extra block
pads 1; block8..block11 then run a 3x3 VALID conv with stride 2, block12 a 4x4 VALID conv ('conv4x4')
with stride 1 (2x2 padded to 4x4 -> 1x1).
"""
from nets import ssd_vgg_300
from nets.ssd_params import PRIOR_SCALING, SSDParams, anchor_size_pairs
from nets.ssd_vgg_300 import ExtraBlock

EXTRA_BLOCKS = (
    ExtraBlock('block8', 256, 512, 3, 2, 1),    # 32 -> 16
    ExtraBlock('block9', 128, 256, 3, 2, 1),    # 16 -> 8
    ExtraBlock('block10', 128, 256, 3, 2, 1),   # 8 -> 4
    ExtraBlock('block11', 128, 256, 3, 2, 1),   # 4 -> 2
    ExtraBlock('block12', 128, 256, 4, 1, 1),   # 2 -> 1
)

# 'ssd_tensorflow': SSD-Tensorflow's SSD512 sizes; 'caffe': the Caffe VOC SSD512 release
# (min_ratio 15, max_ratio 90, first layer 0.07 of 512).
ANCHOR_SIZES = {
    'ssd_tensorflow': (20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72),
    'caffe': (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
}


def default_params(num_classes=21, anchor_set='ssd_tensorflow'):
    """SSDParams of SSD512 (SSD-Tensorflow / Caffe VOC layout)."""
    wide = (2., .5, 3., 1. / 3)
    return SSDParams(
        img_shape=(512, 512),
        num_classes=num_classes,
        feat_layers=('block4', 'block7', 'block8', 'block9', 'block10', 'block11', 'block12'),
        feat_shapes=((64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)),
        anchor_sizes=anchor_size_pairs(ANCHOR_SIZES[anchor_set]),
        anchor_ratios=((2., .5), wide, wide, wide, wide, (2., .5), (2., .5)),
        anchor_steps=(8, 16, 32, 64, 128, 256, 512),
        anchor_offset=0.5,
        normalizations=(20, -1, -1, -1, -1, -1, -1),
        prior_scaling=PRIOR_SCALING)


class SSDNet(ssd_vgg_300.SSDNet):
    """SSD512-VGG16; same interface as ssd_vgg_300.SSDNet."""
    scope = 'ssd_512_vgg'
    default_image_size = 512
    extra_blocks = EXTRA_BLOCKS
    anchor_size_sets = ANCHOR_SIZES
    make_params = staticmethod(default_params)
