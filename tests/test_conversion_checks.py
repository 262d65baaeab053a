"""The converter's whole-dataset checks (datasets/conversion_checks.py), through convert_voc_dataset."""
import re

from PIL import Image

from datasets import voc_reader
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
    assert ("  warning: ImageSets/Main/train.txt: 2 class(es) with boxes outside split 'train' but none in it: "
            "'soap' (test 3), 'tea' (test 1); the model never learns them (AP 0); put some of their images in "
            "ImageSets/Main/train.txt") in summary.splitlines()


def test_a_class_missing_from_training_is_counted_once_per_split_of_voc_s_overlapping_lists(tmp_path):
    """VOC's trainval holds val: one 'soap' box in val is 1 in each, not 2 in all, and test is not named."""
    _split_folder(tmp_path, train={'a': ['can']}, test={'c': ['can']})
    write_sample(tmp_path, 'v', [('soap', 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    lists = tmp_path / 'ImageSets' / 'Main'
    (lists / 'val.txt').write_text('v\n')
    (lists / 'trainval.txt').write_text('a\nv\n')
    _, summary = convert(tmp_path, class_names=['can', 'soap'])
    assert ("  warning: ImageSets/Main/train.txt: 1 class(es) with boxes outside split 'train' but none in it: "
            "'soap' (trainval 1, val 1); the model never learns them (AP 0)") in summary


def test_a_class_missing_from_a_random_split_asks_for_images_or_another_seed(tmp_path):
    for stem, names in {'a': ['can'], 'b': ['can'], 'c': ['can'], 'd': ['soap']}.items():
        write_sample(tmp_path, stem, [(name, 1, 1, 9, 9, '') for name in names], image=jpeg_bytes(20, 20),
                     size=(20, 20))
    results = [convert(tmp_path, class_names=['can', 'soap'], validation_fraction=0.25, seed=seed)
               for seed in range(8)]
    said = [summary for result, summary in results if "'soap' (test 1)" in summary]
    assert said, 'no seed of 8 put the one soap image in test'
    assert ("but none in it: 'soap' (test 1); the model never learns them (AP 0); add images of them, or convert "
            "with another --seed (the split is drawn at random)") in said[0]


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


def test_an_image_with_a_rarer_extension_is_found_by_its_xml_s_stem(tmp_path):
    """No <filename>: a.Jpg and b.webp are found by the XML's stem (any case of LISTED_EXTENSIONS)."""
    _split_folder(tmp_path, train={'a': ['can'], 'b': ['can']}, test={'c': ['can']})
    images = tmp_path / 'JPEGImages'
    for stem, name, image_format in (('a', 'a.Jpg', 'JPEG'), ('b', 'b.webp', 'WEBP')):
        (images / f'{stem}.jpg').unlink()
        Image.new('RGB', (20, 20)).save(images / name, format=image_format)
    for xml in (tmp_path / 'Annotations').glob('*.xml'):
        xml.write_text(re.sub(r'<filename>[^<]*</filename>', '', xml.read_text()))
    result, summary = convert(tmp_path)
    assert result.info.num_samples['train'] == 2, summary


def test_the_folder_is_listed_once_for_many_images_of_rarer_extensions(tmp_path, monkeypatch):
    """A folder of .webp photos: every sample misses the usual spellings; one listing serves them all (a
    listing per sample made a 10,000-image conversion quadratic)."""
    for stem in 'abcde':
        Image.new('RGB', (4, 4)).save(tmp_path / f'{stem}.webp', format='WEBP')
    listings = []
    listed = voc_reader.image_names
    monkeypatch.setattr(voc_reader, 'image_names', lambda folder: listings.append(folder) or listed(folder))
    found = [voc_reader.find_image(str(tmp_path), '', stem) for stem in 'abcde']
    assert found == [str(tmp_path / f'{stem}.webp') for stem in 'abcde'] and len(listings) == 1
