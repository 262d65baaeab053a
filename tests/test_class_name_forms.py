"""Class names typed in Unicode's two forms of an accented letter (composed 'é', or 'e' and a combining accent,
as macOS file names and some tools write it) are one class: they look the same to the user."""
from datasets.dataset_info import read_labels_file
from tests.test_voc_to_tfrecords import convert, jpeg_bytes, write_sample

COMPOSED = 'caf\u00e9 cr\u00e8me'
DECOMPOSED = 'cafe\u0301 cre\u0300me'


def _two_images(root):
    write_sample(root, 'a', [(COMPOSED, 1, 1, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))
    write_sample(root, 'b', [(DECOMPOSED, 2, 2, 9, 9, '')], image=jpeg_bytes(20, 20), size=(20, 20))


def test_both_forms_in_annotations_are_one_class(tmp_path):
    _two_images(tmp_path)
    result, _ = convert(tmp_path)
    assert result.info.class_names == ['none', COMPOSED]
    assert result.info.boxes_per_class == {COMPOSED: 2}


def test_labels_file_in_the_other_form_keeps_every_image(tmp_path):
    _two_images(tmp_path)
    (tmp_path / 'labels.txt').write_text(DECOMPOSED + '\n', encoding='utf-8')
    result, summary = convert(tmp_path, class_names=read_labels_file(str(tmp_path / 'labels.txt')))
    assert result.info.class_names == ['none', COMPOSED]
    assert result.info.num_samples == {'train': 2}, summary
