"""The seeded synthetic "commodity" dataset (datasets/demo_drawing.py draws it), in Pascal VOC layout.

Image i is drawn from numpy's default_rng([seed, i]), so a seed fixes every file. Writes
Annotations/*.xml (labelImg style), JPEGImages/*.jpg, ImageSets/Main/train.txt and test.txt, labels.txt.

Run: python -m datasets.demo_dataset --output_dir=demo   (training's configs/demo_cpu.flags does it on first use);
--style=small_objects makes the crowded small-object variant (demo_drawing.STYLES).
"""
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from datasets import dataset_info as ds_info
from datasets.demo_drawing import CLASS_NAMES, STYLES, render_image
from utils.errors import UserError

GENERATED_DIRS = ('ImageSets', 'JPEGImages', 'Annotations')  # moved in this order: Annotations last
MARKER = '.generated_by_demo_dataset'


def annotation_xml(filename, height, width, objects):
    """labelImg-style Pascal VOC XML text."""
    root = ET.Element('annotation')
    for tag, text in (('folder', 'JPEGImages'), ('filename', filename), ('path', f'JPEGImages/{filename}')):
        ET.SubElement(root, tag).text = text
    ET.SubElement(ET.SubElement(root, 'source'), 'database').text = 'commodity demo (synthetic)'
    size = ET.SubElement(root, 'size')
    for tag, value in (('width', width), ('height', height), ('depth', 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, 'segmented').text = '0'
    for obj in objects:
        element = ET.SubElement(root, 'object')
        for tag in ('name', 'pose', 'truncated', 'difficult'):
            ET.SubElement(element, tag).text = str(obj.get(tag, 'Unspecified'))
        bndbox = ET.SubElement(element, 'bndbox')
        for tag in ('xmin', 'ymin', 'xmax', 'ymax'):
            ET.SubElement(bndbox, tag).text = str(obj[tag])
    ET.indent(root, space='\t')
    return ET.tostring(root, encoding='unicode') + '\n'


def _write_files(root, seed, num_train, num_test, style):
    for sub in (os.path.join('ImageSets', 'Main'), 'JPEGImages', 'Annotations'):
        os.makedirs(os.path.join(root, sub))
    for sub in GENERATED_DIRS:
        open(os.path.join(root, sub, MARKER), 'w').close()
    ids = [f'{i:06d}' for i in range(num_train + num_test)]
    for i, image_id in enumerate(ids):
        image, objects = render_image(np.random.default_rng([seed, i]), style)
        Image.fromarray(image).save(os.path.join(root, 'JPEGImages', image_id + '.jpg'), quality=90)
        with open(os.path.join(root, 'Annotations', image_id + '.xml'), 'w') as out:
            out.write(annotation_xml(image_id + '.jpg', image.shape[0], image.shape[1], objects))
    for split, split_ids in (('train', ids[:num_train]), ('test', ids[num_train:])):
        with open(os.path.join(root, 'ImageSets', 'Main', split + '.txt'), 'w') as out:
            out.write(''.join(i + '\n' for i in split_ids))
    with open(os.path.join(root, 'labels.txt'), 'w') as out:
        out.write(''.join(name + '\n' for name in CLASS_NAMES))


def has_annotations(image_dir):
    """True when image_dir/Annotations holds at least one .xml file."""
    folder = os.path.join(image_dir, 'Annotations')
    return os.path.isdir(folder) and any(n.lower().endswith('.xml') for n in os.listdir(folder))


def _check_target_free(path):
    """A target may be replaced when absent, empty, or left by an interrupted generation."""
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, MARKER)):
        raise UserError(f'{path}: holds files but no annotations; move them away before generating '
                        'the demo data')
    if os.path.isfile(path):
        with open(path) as source:
            if source.read().split() != list(CLASS_NAMES):
                raise UserError(f'{path}: exists with other class names; move it away before generating '
                                'the demo data')


def generate_demo_dataset(output_dir, seed=0, num_train=300, num_test=100, style=STYLES['demo']):
    """Write the demo dataset into output_dir (VOC layout), its images composed as `style` (a
    demo_drawing.DemoStyle) says.

    Files are made in a hidden temp folder inside output_dir, then moved in, Annotations last, so
    an interrupted run never leaves a dataset that looks complete. UserError when output_dir
    already holds annotations or foreign files in the folders it would write."""
    if has_annotations(output_dir):
        raise UserError(f'{output_dir}: already holds Annotations/*.xml; not overwriting them: generate the demo '
                        f'data into another folder (--output_dir=demo) or move those files away')
    os.makedirs(output_dir, exist_ok=True)
    for name in os.listdir(output_dir):
        if name.startswith('.demo-partial-'):
            shutil.rmtree(os.path.join(output_dir, name))  # left by an interrupted generation
    targets = ('labels.txt',) + GENERATED_DIRS
    for name in targets:
        _check_target_free(os.path.join(output_dir, name))
    temp_root = tempfile.mkdtemp(prefix='.demo-partial-', dir=output_dir)
    try:
        _write_files(temp_root, seed, num_train, num_test, style)
        for name in targets:
            target = os.path.join(output_dir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(os.path.join(temp_root, name), target)
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)
    return output_dir


def ensure_demo_dataset(image_dir, tfrecord_dir, log_fn=print, seed=0, num_train=300, num_test=100):
    """Make sure tfrecord_dir holds a converted dataset; returns tfrecord_dir.

    Nothing to do when tfrecord_dir/dataset_info.json exists. Otherwise, when image_dir holds no
    Annotations/*.xml, the demo dataset is generated there first; then image_dir is converted
    (class order from image_dir/labels.txt when present)."""
    if os.path.isfile(os.path.join(tfrecord_dir, ds_info.INFO_FILENAME)):
        return tfrecord_dir
    # Imported here: the converter pulls in TensorFlow, which generating images does not need.
    from datasets.voc_to_tfrecords import ConversionOptions, convert_voc_dataset
    if not has_annotations(image_dir):
        log_fn(f'{image_dir} holds no annotated images: generating the demo "commodity" dataset there '
               f'(seed {seed}, {num_train} train + {num_test} test images, classes {", ".join(CLASS_NAMES)})')
        generate_demo_dataset(image_dir, seed=seed, num_train=num_train, num_test=num_test)
    log_fn(f'{tfrecord_dir} has no {ds_info.INFO_FILENAME}: converting {image_dir} to TFRecords')
    labels_path = os.path.join(image_dir, 'labels.txt')
    class_names = ds_info.read_labels_file(labels_path) if os.path.isfile(labels_path) else None
    options = ConversionOptions(dataset_name='commodity', class_names=class_names)
    convert_voc_dataset(image_dir, tfrecord_dir, options, log_fn=log_fn)
    return tfrecord_dir


def main(flag_values):
    generate_demo_dataset(flag_values.output_dir, flag_values.seed, flag_values.num_train, flag_values.num_test,
                          STYLES[flag_values.style])
    print(f'wrote {flag_values.num_train} train + {flag_values.num_test} test images ({flag_values.style}) to '
          f'{flag_values.output_dir}')


if __name__ == '__main__':
    from absl import flags

    from utils import script_setup
    # Defined only when run as a script: importing this module must not add flags to other tools.
    flags.DEFINE_string('output_dir', 'demo', 'Folder to write the VOC layout into (one without annotations).')
    flags.DEFINE_integer('seed', 0, 'Seed of every image and annotation.')
    flags.DEFINE_integer('num_train', 300, 'Images in the train split.')
    flags.DEFINE_integer('num_test', 100, 'Images in the test split.')
    flags.DEFINE_enum('style', 'demo', list(STYLES), 'demo: the Quick start\'s images; small_objects: crowded '
                      '300 x 300 images of objects 8-18 px on their shorter side.')
    script_setup.run_main(main, flags.FLAGS, graph_mode=False)
