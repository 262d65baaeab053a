"""The converter's whole-dataset checks (datasets/conversion_checks.py), through convert_voc_dataset."""
from PIL import Image

from tests.test_voc_to_tfrecords import convert, jpeg_bytes, write_sample


def _split_folder(root, train, test):
    """A VOC folder of 20x20 JPEGs with train.txt and test.txt; train, test: stem -> class names of its boxes."""
    for stem, names in {**train, **test}.items():
        write_sample(root, stem, [(name, 1 + i, 1, 9 + i, 9, '') for i, name in enumerate(names)],
                     image=jpeg_bytes(20, 20), size=(20, 20))
    lists = root / 'ImageSets' / 'Main'
    lists.mkdir(parents=True)
    (lists / 'train.txt').write_text('\n'.join(train) + '\n')
    (lists / 'test.txt').write_text('\n'.join(test) + '\n')


def test_classes_with_boxes_only_outside_the_training_split_are_warned_about(tmp_path):
    _split_folder(tmp_path, train={'a': ['can'], 'b': ['chips', 'can']},
                  test={'c': ['can', 'soap'], 'd': ['soap', 'tea', 'soap']})
    result, summary = convert(tmp_path, class_names=['can', 'chips', 'soap', 'tea'])
    assert result.info.boxes_per_class == {'can': 3, 'chips': 1, 'soap': 3, 'tea': 1}
    assert ("  warning: ImageSets/Main/train.txt: 2 class(es) with boxes in split 'test' but none in split 'train': "
            "'soap' (3), 'tea' (1); the model never learns them (AP 0); put some of their images in split "
            "'train'") in summary.splitlines()


def test_a_class_only_in_the_training_split_is_no_warning(tmp_path):
    _split_folder(tmp_path, train={'a': ['can'], 'b': ['chips']}, test={'c': ['can']})
    result, summary = convert(tmp_path)
    assert result.count('warning') == 0, summary


def test_images_of_every_format_read_are_named_when_no_annotation_names_them(tmp_path):
    _split_folder(tmp_path, train={'a': ['can']}, test={'b': ['can']})
    images = tmp_path / 'JPEGImages'
    for name, image_format in (('web.webp', 'WEBP'), ('scan.BMP', 'BMP'), ('phone.Jpg', 'JPEG')):
        Image.new('RGB', (20, 20)).save(images / name, format=image_format)
    (images / 'notes.txt').write_text('not an image')
    _, summary = convert(tmp_path)
    assert [line for line in summary.splitlines() if line.startswith('  unannotated')] == [
        f'  unannotated: JPEGImages/{name}: no Annotations/{name.split(".")[0]}.xml: left out (a background-only '
        f'image needs an XML with no <object>)' for name in ('phone.Jpg', 'scan.BMP', 'web.webp')]
