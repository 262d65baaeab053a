"""One measurement of bench/train_throughput.py, in its own process (so each has its own peak RSS).

    python -m bench.throughput_child matmul
    python -m bench.throughput_child flops DEPTH_MULTIPLIER NUM_CLASSES
    python -m bench.throughput_child saved_model EXPORT_DIR BATCH ITERATIONS
    python -m bench.throughput_child detect_model CHECKPOINT_DIR BATCH ITERATIONS
    PYTHONPATH=. /tmp/tv/bin/python -m bench.throughput_child torch_train BATCH STEPS WARMUP   (torch + torchvision)
    PYTHONPATH=. /tmp/tv/bin/python -m bench.throughput_child torch_infer BATCH ITERATIONS     (torch + torchvision)

(from the repository root; train_throughput.py runs them so, the torch ones with its --torch_python).

Prints one line 'RESULT {json}'. Inputs are random 300x300 RGB images (uint8 for our models; floats in
[0, 1] for torchvision's, whose transform then normalises them); inference times the median run after one
warm-up run.
"""
import json
import os
import statistics
import sys

from bench.timing import call_seconds

IMAGE_SIZE = 300
TORCH_THREADS = 2
# torchvision's SSD defaults (score_thresh, nms_thresh, topk_candidates, detections_per_img); the
# SavedModel's export defaults are the same.
DETECT_OPTIONS = {'score_threshold': 0.01, 'nms_threshold': 0.45, 'top_k': 400, 'keep_top_k': 200}


def report(**values):
    print('RESULT ' + json.dumps(values), flush=True)


def median_seconds(run, iterations, warmup=1):
    return statistics.median(call_seconds(run, iterations, warmup))


def _tf():
    from utils import script_setup  # noqa: F401  (TensorFlow's log level and oneDNN switch, before it loads)
    import tensorflow.compat.v1 as tf
    tf.get_logger().setLevel('ERROR')
    tf.disable_v2_behavior()
    return tf


def _uint8_images(batch):
    import numpy as np
    return np.random.RandomState(0).randint(0, 256, [batch, IMAGE_SIZE, IMAGE_SIZE, 3]).astype(np.uint8)


def matmul():
    _tf()
    from bench.network import matmul_peak
    report(gflops=matmul_peak(4096, 3))


def flops(depth_multiplier, num_classes):
    """GFLOP per image of SSD300 at this depth and class count (background included): forward, and forward +
    backward (bench/network.py's count)."""
    tf = _tf()
    import tf_slim as slim
    from bench.network import conv_macs
    from nets import nets_factory
    with tf.Graph().as_default() as graph:
        net = nets_factory.get_network('ssd_300_vgg', int(num_classes), float(depth_multiplier))
        with slim.arg_scope(net.arg_scope()):
            net.build(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]))
        macs, first_macs = conv_macs(graph)
    report(forward=2e-9 * macs, train=2e-9 * (3 * macs - first_macs))


def saved_model(export_dir, batch, iterations):
    """TF Serving's way: the SavedModel's serving_uint8 signature in a session."""
    tf = _tf()
    with tf.Session(graph=tf.Graph()) as sess:
        meta_graph = tf.saved_model.loader.load(sess, ['serve'], export_dir)
        signature = meta_graph.signature_def['serving_uint8']
        feed_name = signature.inputs['images'].name
        fetches = {key: info.name for key, info in signature.outputs.items()}
        images = _uint8_images(batch)
        seconds = median_seconds(lambda: sess.run(fetches, {feed_name: images}), iterations)
    report(images_per_s=batch / seconds)


def detect_model(checkpoint_dir, batch, iterations):
    """detect.py's model: the network rebuilt from model_config.json and restored in this process, with
    the SavedModel's (and torchvision's) post-processing settings, in detect.py's environment (importing it
    sets TF_ONEDNN_ASSUME_FROZEN_WEIGHTS before TensorFlow loads)."""
    import detect  # noqa: F401
    tf = _tf()
    from utils import checkpoints, devices, inference_model, model_config
    prefix = checkpoints.require_checkpoint(checkpoint_dir)
    config = model_config.inference_config(prefix, {})
    with tf.Graph().as_default():
        images = tf.placeholder(tf.uint8, [None, None, None, 3])
        network, detections = inference_model.detect_images(images, config, DETECT_OPTIONS)
        variables_map = checkpoints.inference_variable_map(prefix, network)
        with tf.Session(config=devices.session_config()) as sess:
            checkpoints.restore_for_inference(sess, tf.train.Saver(var_list=variables_map), prefix,
                                           variables_map, config)
            feed = {images: _uint8_images(batch)}
            seconds = median_seconds(lambda: sess.run(detections, feed), iterations)
    report(images_per_s=batch / seconds)


def _torch_model():
    import torch
    import torchvision
    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    return torch, torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)


def torch_train(batch, steps, warmup):
    torch, model = _torch_model()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    images = [torch.rand(3, IMAGE_SIZE, IMAGE_SIZE) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        corner = torch.rand(4, 2) * IMAGE_SIZE * 0.6
        size = 20 + torch.rand(4, 2) * IMAGE_SIZE * 0.35
        targets.append({'boxes': torch.cat([corner, corner + size], dim=1), 'labels': torch.randint(1, 21, (4,))})

    def step():
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    report(images_per_s=batch / median_seconds(step, steps - warmup, warmup))


def torch_infer(batch, iterations):
    torch, model = _torch_model()
    model.eval()
    images = [torch.rand(3, IMAGE_SIZE, IMAGE_SIZE) for _ in range(batch)]
    with torch.inference_mode():
        seconds = median_seconds(lambda: model(images), iterations)
    report(images_per_s=batch / seconds)


def main(argv):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    mode, args = argv[1], argv[2:]
    numbers = [int(a) if a.isdigit() else a for a in args]
    {'matmul': matmul, 'flops': flops, 'saved_model': saved_model, 'detect_model': detect_model,
     'torch_train': torch_train, 'torch_infer': torch_infer}[mode](*numbers)


if __name__ == '__main__':
    main(sys.argv)
