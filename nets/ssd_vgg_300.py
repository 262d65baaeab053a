"""SSD300 with a VGG-16 trunk (Liu et al., "SSD: Single Shot MultiBox Detector"), tf-slim, graph mode.

Feature layers for a 300x300 input: block4 (conv4_3, 38x38, L2-normalised), block7 (19x19),
block8 (10x10), block9 (5x5), block10 (3x3), block11 (1x1); 8732 anchors. Variable names and shapes
are those of SSD-Tensorflow's published ssd_300_vgg.ckpt (scope 'ssd_300_vgg'), and the trunk matches
TF-Slim's vgg_16.ckpt under the 'vgg_16' scope.

`SSDNet` here is also the base of ssd_vgg_512.SSDNet, which only swaps the parameters and extra blocks.
"""
import collections
import functools

import numpy as np
import tensorflow.compat.v1 as tf
import tf_slim as slim

from nets import anchors as anchors_lib
from nets import box_coder, postprocess, ssd_layers, ssd_losses
from nets.ssd_params import (ANCHOR_SETS, PRIOR_SCALING, SSDParams, anchor_size_pairs, anchor_sizes_problem,
                             num_anchors_per_cell, scaled_channels)
from utils.errors import UserError

# Extra block: conv1x1 with `mid` channels, zero-pad `pad`, conv kernel x kernel / stride, `out` channels.
ExtraBlock = collections.namedtuple('ExtraBlock', ['name', 'mid', 'out', 'kernel', 'stride', 'pad'])

EXTRA_BLOCKS = (
    ExtraBlock('block8', 256, 512, 3, 2, 1),    # 19 -> 10
    ExtraBlock('block9', 128, 256, 3, 2, 1),    # 10 -> 5
    ExtraBlock('block10', 128, 256, 3, 1, 0),   # 5 -> 3
    ExtraBlock('block11', 128, 256, 3, 1, 0),   # 3 -> 1
)

# Per-layer anchor sizes s_0..s_6 in pixels. 'ssd_tensorflow': SSD-Tensorflow's defaults (the sizes its
# published checkpoint was evaluated with); 'caffe': the Caffe VOC release (min_ratio 20, max_ratio 90).
ANCHOR_SIZES = {
    'ssd_tensorflow': (21., 45., 99., 153., 207., 261., 315.),
    'caffe': (30., 60., 111., 162., 213., 264., 315.),
}


def default_params(num_classes=21, anchor_set='ssd_tensorflow'):
    """SSDParams of SSD300 (SSD-Tensorflow / Caffe VOC layout)."""
    return SSDParams(
        img_shape=(300, 300),
        num_classes=num_classes,
        feat_layers=('block4', 'block7', 'block8', 'block9', 'block10', 'block11'),
        feat_shapes=((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)),
        anchor_sizes=anchor_size_pairs(ANCHOR_SIZES[anchor_set]),
        anchor_ratios=((2., .5), (2., .5, 3., 1. / 3), (2., .5, 3., 1. / 3), (2., .5, 3., 1. / 3),
                       (2., .5), (2., .5)),
        anchor_steps=(8, 16, 32, 64, 100, 300),
        anchor_offset=0.5,
        normalizations=(20, -1, -1, -1, -1, -1),
        prior_scaling=PRIOR_SCALING)


class SSDNet:
    """SSD300-VGG16: layers, anchors, targets, losses and detections of one configuration.

    Attributes: params (SSDParams), anchors (numpy [N, 4] float32, cy cx h w, normalised),
    anchors_per_layer, num_classes, depth_multiplier, anchor_set, anchor_sizes (the per-layer sizes
    s_0..s_L in pixels: anchor_set's, or those given), scope, default_image_size, box_head_scopes (the
    variable scopes that depend on num_classes / anchors).
    """
    scope = 'ssd_300_vgg'
    default_image_size = 300
    extra_blocks = EXTRA_BLOCKS
    anchor_size_sets = ANCHOR_SIZES
    make_params = staticmethod(default_params)

    def __init__(self, num_classes=21, depth_multiplier=1.0, anchor_set='ssd_tensorflow', anchor_sizes=None):
        if anchor_set not in self.anchor_size_sets:
            raise UserError('anchor_set %r is unknown: choose one of %s' % (anchor_set, ', '.join(ANCHOR_SETS)))
        problem = anchor_sizes_problem(anchor_sizes, self.num_anchor_sizes()) if anchor_sizes else None
        if problem:
            raise UserError(f'anchor_sizes {list(anchor_sizes)}: {problem}')
        if not depth_multiplier > 0:
            raise UserError('depth_multiplier must be > 0, got %r' % (depth_multiplier,))
        if int(num_classes) < 2:
            raise UserError('num_classes must count the background and at least one class (>= 2), got %r'
                            % (num_classes,))
        self.num_classes = int(num_classes)
        self.depth_multiplier = float(depth_multiplier)
        self.anchor_set = anchor_set
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes) if anchor_sizes else self.anchor_size_sets[anchor_set]
        self.params = self.make_params(self.num_classes, anchor_set)._replace(
            anchor_sizes=anchor_size_pairs(self.anchor_sizes))
        self.anchors_per_layer = anchors_lib.ssd_anchors_per_layer(self.params)
        self.anchors = np.concatenate(self.anchors_per_layer, axis=0)

    @classmethod
    def num_anchor_sizes(cls):
        """Sizes a list of per-layer anchor sizes holds: one more than the feature layers."""
        return len(cls.make_params().feat_layers) + 1

    @property
    def box_head_scopes(self):
        """Scopes of the variables whose shapes follow num_classes (exclude them to fine-tune)."""
        return ['%s/%s_box' % (self.scope, layer) for layer in self.params.feat_layers]

    @property
    def class_head_scopes(self):
        """Scopes of the per-class score layers (ssd_layers.box_head's conv_cls): what another class list changes."""
        return [scope + '/conv_cls' for scope in self.box_head_scopes]

    def arg_scope(self, weight_decay=0.0005, data_format='NHWC'):
        """tf-slim arg_scope: ReLU, Xavier init, zero biases, L2 weight decay (see ssd_layers)."""
        return ssd_layers.ssd_arg_scope(weight_decay, data_format)

    def build(self, images, is_training=True, data_format='NHWC', reuse=None, native_dilation=None,
              paired_columns=None):
        """Forward pass. images: [B, H, W, 3] float32 NHWC (mean-subtracted), H x W = default size.

        data_format: layout the layers run in; 'NCHW' transposes the input once. is_training: the net has no
        dropout or batch norm; it only picks paired_columns' default. native_dilation: how conv6 runs
        (ssd_layers.dilated_conv2d), None: natively where this process's kernels allow it. paired_columns:
        whether 8-channel trunk layers run on column pairs (ssd_layers.trunk_conv2d), None: in training, where
        they gain. Every form has the same variables and computes the same function.
        Returns (logits [B, N, num_classes], localisations [B, N, 4] (ty, tx, th, tw), end_points dict of
        feature maps 'block1'..), flattened in anchor order whatever the data format.
        """
        if data_format not in ('NHWC', 'NCHW'):
            raise UserError('data_format must be NHWC or NCHW, got %r' % (data_format,))
        self._check_input(images)
        depth = functools.partial(scaled_channels, depth_multiplier=self.depth_multiplier)
        end_points = {}
        with tf.variable_scope(self.scope, values=[images], reuse=reuse):
            with slim.arg_scope([slim.conv2d, slim.max_pool2d], data_format=data_format):
                net = images if data_format == 'NHWC' else tf.transpose(images, [0, 3, 1, 2])
                if native_dilation is None:
                    native_dilation = ssd_layers.native_dilation_available()
                if paired_columns is None:
                    paired_columns = is_training and ssd_layers.paired_columns_available()
                net = ssd_layers.vgg_trunk(net, depth, end_points, native_dilation, paired_columns)
                for spec in self.extra_blocks:
                    net = ssd_layers.extra_block(net, spec, depth, data_format)
                    end_points[spec.name] = net
                logits, localisations = self._box_heads(end_points, data_format)
        self._check_num_anchors(logits)
        return logits, localisations, end_points

    def _box_heads(self, end_points, data_format):
        """Runs one box head per feature layer and concatenates them in layer order."""
        all_logits, all_loc = [], []
        for layer, num_anchors, normalization in zip(self.params.feat_layers, num_anchors_per_cell(self.params),
                                                     self.params.normalizations):
            with tf.variable_scope(layer + '_box'):
                logits, loc = ssd_layers.box_head(end_points[layer], self.num_classes, num_anchors,
                                                  normalization, data_format)
            all_logits.append(logits)
            all_loc.append(loc)
        return tf.concat(all_logits, axis=1, name='logits'), tf.concat(all_loc, axis=1, name='localisations')

    def _check_input(self, images):
        shape = images.shape
        if shape.rank is not None and (shape.rank != 4 or shape[-1] not in (None, 3)):
            raise UserError('%s expects images [batch, height, width, 3] (NHWC), got shape %s'
                            % (self.scope, shape))

    def _check_num_anchors(self, logits):
        num_outputs = logits.shape.as_list()[1]
        if num_outputs is not None and num_outputs != len(self.anchors):
            raise UserError('%s: the input size gives %d box predictions but the anchors expect %d; '
                            'feed %dx%d images' % (self.scope, num_outputs, len(self.anchors),
                                                   self.params.img_shape[0], self.params.img_shape[1]))

    def losses(self, logits, localisations, target_labels, target_loc, **kwargs):
        """ssd_losses.ssd_losses (negative_ratio, alpha, label_smoothing as keywords)."""
        return ssd_losses.ssd_losses(logits, localisations, target_labels, target_loc, **kwargs)

    def target_encoder(self, match_threshold=0.5, ignore_difficult=True):
        """encode_fn(labels, boxes, difficult) -> training targets for this net's anchors (box_coder)."""
        return box_coder.make_target_encoder(self.anchors, self.params.prior_scaling,
                                             match_threshold, ignore_difficult)

    def detect(self, logits, localisations, **kwargs):
        """postprocess.detect with this net's anchors and prior scaling."""
        return postprocess.detect(logits, localisations, self.anchors, self.params.prior_scaling, **kwargs)
