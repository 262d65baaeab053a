"""Network outputs -> final detections, batched, graph ops only (usable in a SavedModel).

Per image, as the Caffe DetectionOutput layer: class scores = softmax(logits) without the background;
for each class keep the `top_k` highest-scoring anchors, drop scores <= score_threshold, greedy NMS at
IoU `nms_threshold` within the class; then keep the `keep_top_k` best detections over all classes.
Boxes are decoded with box_coder.decode (NMS runs on the unclipped boxes, as in Caffe) and the
returned boxes are clipped to [0, 1].
"""
import tensorflow.compat.v1 as tf

from nets import box_coder


def detect(logits, localisations, anchors_cychw, prior_scaling,
           score_threshold=0.01, nms_threshold=0.45, top_k=400, keep_top_k=200):
    """Detections of a batch.

    Args:
      logits [B, N, C], localisations [B, N, 4] (ty, tx, th, tw); anchors_cychw [N, 4] numpy.
    Returns dict:
      detection_boxes [B, keep_top_k, 4] yxyx normalised, clipped to [0, 1];
      detection_scores [B, keep_top_k] float32, descending;
      detection_classes [B, keep_top_k] int64 in 1..C-1;
      num_detections [B] int32. Entries past num_detections are padding (zeros, class 0).
    """
    with tf.name_scope('detect'):
        num_anchors = int(anchors_cychw.shape[0])
        boxes = box_coder.decode(localisations, anchors_cychw, prior_scaling)           # [B, N, 4]
        class_scores = tf.transpose(tf.nn.softmax(logits)[:, :, 1:], [0, 2, 1])         # [B, C-1, N]
        # Pre-NMS per-class top-k: candidate j of class c is its j-th best anchor.
        top_scores, top_index = tf.nn.top_k(class_scores, k=min(top_k, num_anchors), sorted=True)
        top_boxes = tf.gather(boxes, top_index, batch_dims=1)                           # [B, C-1, k, 4]
        nms = tf.image.combined_non_max_suppression(
            boxes=tf.transpose(top_boxes, [0, 2, 1, 3]),                                # [B, k, C-1, 4]
            scores=tf.transpose(top_scores, [0, 2, 1]),                                 # [B, k, C-1]
            max_output_size_per_class=keep_top_k,
            max_total_size=keep_top_k,
            iou_threshold=nms_threshold,
            score_threshold=score_threshold,
            pad_per_class=False,
            clip_boxes=False)
        is_valid = tf.sequence_mask(nms.valid_detections, keep_top_k)
        classes = tf.where(is_valid, tf.cast(nms.nmsed_classes, tf.int64) + 1,
                           tf.zeros_like(is_valid, tf.int64))
        return {
            'detection_boxes': tf.clip_by_value(nms.nmsed_boxes, 0., 1., name='detection_boxes'),
            'detection_scores': tf.identity(nms.nmsed_scores, name='detection_scores'),
            'detection_classes': tf.identity(classes, name='detection_classes'),
            'num_detections': tf.identity(nms.valid_detections, name='num_detections'),
        }
