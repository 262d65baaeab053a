"""Times utils/voc_eval.evaluate on a VOC07-test-sized problem.

5000 images x 200 detections (1,000,000 detections, 21 classes), about 2.5 ground truths per image
(VOC07 test: 12,032 objects in 4,952 images), 10 % difficult. Detections are noisy copies of ground
truths (70 % right class) plus background boxes, so matching does real work.

    python bench/voc_eval_speed.py [--images 5000] [--detections 200] [--repeats 3]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import voc_eval  # noqa: E402


def make_problem(num_images, dets_per_image, num_classes=21, seed=0):
    """Random (voc_eval.Detections, voc_eval.GroundTruth) of flat arrays."""
    rng = np.random.default_rng(seed)
    gt_per_image = rng.integers(1, 5, num_images)
    gt_images = np.repeat(np.arange(num_images), gt_per_image)
    centres = rng.uniform(0.15, 0.85, (len(gt_images), 2))
    sizes = rng.uniform(0.05, 0.3, (len(gt_images), 2))
    gt_boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    gt_classes = rng.integers(1, num_classes, len(gt_images))
    gt_difficult = (rng.uniform(size=len(gt_images)) < 0.1).astype(np.int64)

    det_images = np.repeat(np.arange(num_images), dets_per_image)
    first_gt = np.concatenate(([0], np.cumsum(gt_per_image)[:-1]))
    source = first_gt[det_images] + rng.integers(0, gt_per_image[det_images])
    det_boxes = gt_boxes[source] + rng.normal(0, 0.04, (len(det_images), 4))
    background = rng.uniform(size=len(det_images)) < 0.5
    det_boxes[background] = np.sort(rng.uniform(0, 1, (background.sum(), 4)).reshape(-1, 2, 2), axis=1)\
        .transpose(0, 2, 1).reshape(-1, 4)
    det_classes = np.where(rng.uniform(size=len(det_images)) < 0.7, gt_classes[source],
                           rng.integers(1, num_classes, len(det_images)))
    det_scores = rng.uniform(size=len(det_images)).astype(np.float32)
    return (voc_eval.Detections(det_images, det_classes, det_scores, det_boxes.astype(np.float32)),
            voc_eval.GroundTruth(gt_images, gt_classes, gt_boxes.astype(np.float32), gt_difficult))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--detections', type=int, default=200)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    problem = make_problem(args.images, args.detections)
    detections, ground_truth = problem
    print('%d images, %d detections, %d ground truths' % (args.images, len(detections.image_ids),
                                                          len(ground_truth.image_ids)))
    timings = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = voc_eval.evaluate(detections, ground_truth, num_classes=21)
        timings.append(time.perf_counter() - start)
    print('| measure | images | detections | best s | mean s | runs | mAP07 | mAP10 |')
    print('|---|---|---|---|---|---|---|---|')
    print('| voc_eval.evaluate | %d | %d | %.3f | %.3f | %d | %.4f | %.4f |'
          % (args.images, len(detections.image_ids), min(timings), float(np.mean(timings)), args.repeats,
             results.map07, results.map10))


if __name__ == '__main__':
    main()
