"""A VOC conversion's Issues, and its checks of the dataset as a whole (datasets/voc_to_tfrecords.py runs them).

Each sample's own problems (an XML that does not parse, a missing image, a box clipped) become Issues where
the sample is read; the checks here look across samples: class names typed two ways, boxes that look
normalised, classes without a box (or without one in the training split), images the test split shares with
another, images no annotation names, and the classes a labels file lacks. `annotations` below is the
conversion's reading of the VOC folder (voc_to_tfrecords._Annotations: dataset_dir, splits, files, parsed,
split_source).
"""
import collections
import dataclasses
import os

from datasets.voc_reader import filename_base, image_names
from datasets.voc_splits import ANNOTATIONS_DIR, IMAGES_DIR

# Kinds of Issue, in the summary's order; 'unannotated': an image no XML names, left out; 'background-only': an
# image without objects, kept as a background sample.
ISSUE_KINDS = ('excluded', 'unannotated', 'repaired', 'warning', 'background-only', 'converted')
TRAINING_SPLITS = ('train', 'trainval')   # the split training reads, by preference


@dataclasses.dataclass
class Issue:
    kind: str              # one of ISSUE_KINDS
    path: str              # file the issue is about, relative to the dataset folder
    reason: str
    unknown_classes: tuple = ()   # excluded for these class names, which the label list lacks

    def __str__(self):
        return f'  {self.kind}: {self.path}: {self.reason}'


def shared_test_images(annotations, shown=5):
    """'warning' Issues for the images the 'test' split shares with another split (train.txt and test.txt
    listing the same image): its mAP would include training images."""
    test = set(annotations.splits.get('test', ()))
    issues = []
    for split, stems in annotations.splits.items():
        shared = [stem for stem in dict.fromkeys(stems) if stem in test]
        if shared and split != 'test':
            names = ', '.join(shared[:shown]) + (', ...' if len(shared) > shown else '')
            issues.append(Issue('warning', annotations.split_source('test'),
                                f'{len(shared)} image(s) also in {annotations.split_source(split)} ({names}): the '
                                f'test mAP would include training images'))
    return issues


def images_without_annotation(annotations):
    """'unannotated' Issues for the images in JPEGImages/ that no annotation names, by its stem, a split list
    or its <filename>: labelImg writes no XML for an image the user never saved."""
    images_dir = os.path.join(annotations.dataset_dir, IMAGES_DIR)
    annotated = set(annotations.files).union(*annotations.splits.values())
    named = {filename_base(annotation.filename) for annotation in annotations.parsed.values()}
    issues = []
    for name in image_names(images_dir):
        stem = os.path.splitext(name)[0]
        if stem not in annotated and name not in named:
            issues.append(Issue('unannotated', os.path.join(IMAGES_DIR, name), f'no {ANNOTATIONS_DIR}/{stem}.xml: left '
                                f'out (a background-only image needs an XML with no <object>)'))
    return issues


def look_alike_key(name):
    """What is left of a class name without case, '_', '-' and extra spaces: 'Soda_Can' -> 'soda can'."""
    return ' '.join(name.casefold().replace('_', ' ').replace('-', ' ').split())


def look_alike_names(class_names, class_source):
    """'warning' Issues for class names that differ only in case, spaces, '_' or '-' ('Can', 'can', 'soda_can',
    'Soda Can'): separate classes, though usually one class typed two ways."""
    groups = {}
    for name in class_names[1:]:
        groups.setdefault(look_alike_key(name), []).append(name)
    return [Issue('warning', class_source, f'class names {", ".join(map(repr, names))} differ only in case, spaces, '
                                           f"'_' or '-': they are {len(names)} classes; if they are one, name it "
                                           f'alike in every annotation')
            for names in groups.values() if len(names) > 1]


def normalised_coordinates(parsed, boxes_per_class):
    """A 'warning' Issue when boxes were written and every box coordinate in the XML files read is 1 or less:
    some export scripts write fractions of the image, where Pascal VOC gives pixels."""
    coordinates = [value for annotation in parsed.values() for obj in annotation.objects
                   for value in (obj.xmin, obj.ymin, obj.xmax, obj.ymax)]
    if not coordinates or max(coordinates) > 1.0 or not sum(boxes_per_class.values()):
        return []
    return [Issue('warning', ANNOTATIONS_DIR, 'every box coordinate is 1 or less: they look normalised to 0..1, '
                                              'while Pascal VOC gives pixels; the boxes cover at most 1 pixel')]


def classes_without_boxes(boxes_per_class, class_source):
    """A 'warning' Issue naming the classes with no box in the dataset ('sprite' in labels.txt, a first line
    '__background__'): the model would learn to detect a class it never sees."""
    empty = [name for name, count in boxes_per_class.items() if not count]
    if not empty:
        return []
    return [Issue('warning', class_source, f'{len(empty)} class(es) with 0 boxes in the converted data: '
                                           f'{", ".join(map(repr, empty))}; the model would train classes it never '
                                           f'sees (annotate them, or drop them from the class list)')]


def training_split(splits):
    """The split of `splits` that training reads: 'train', else 'trainval' (VOC's), else the first; None when
    there is none."""
    return next((name for name in TRAINING_SPLITS if name in splits), next(iter(splits), None))


def classes_missing_from_training(split_boxes, split_source, listed):
    """A 'warning' Issue naming the classes with boxes in another split but none in the training split (a class
    whose only images went to 'test'): the model never learns them, so their test AP is 0. Each is named with
    its box count in every split that has some (splits may overlap, as VOC's trainval holds val). split_boxes:
    split -> {class name: boxes}, in class order; split_source(split): where the split's images are named;
    listed: whether the splits are the user's lists (else drawn at random, so no image can be moved)."""
    train = training_split(split_boxes)
    if len(split_boxes) < 2 or train is None:
        return []
    missing = []
    for name in split_boxes[train]:
        found = [f'{split} {counts[name]}' for split, counts in split_boxes.items() if counts.get(name)]
        if found and not split_boxes[train][name]:
            missing.append(f'{name!r} ({", ".join(found)})')
    if not missing:
        return []
    advice = (f'put some of their images in {split_source(train)}' if listed else
              'add images of them, or convert with another --seed (the split is drawn at random)')
    return [Issue('warning', split_source(train), f'{len(missing)} class(es) with boxes outside split {train!r} '
                                                  f'but none in it: {", ".join(missing)}; the model never learns '
                                                  f'them (AP 0); {advice}')]


def unknown_class_lines(excluded, class_names):
    """One line for the images left out for classes the label list lacks: which, in how many images, and
    the label list's name that each one matches up to case, spaces, '_' or '-', if any."""
    images = collections.Counter(name for issue in excluded for name in issue.unknown_classes)
    if not images:
        return []
    count = sum(bool(issue.unknown_classes) for issue in excluded)
    classes = ', '.join(f'{name!r} in {n}' for name, n in sorted(images.items()))
    listed = {look_alike_key(name): name for name in class_names[1:]}
    typed_like = [(name, listed[look_alike_key(name)]) for name in sorted(images) if look_alike_key(name) in listed]
    hints = ''.join(f'; {name!r}: did you mean {like!r} (labels file)?' for name, like in typed_like)
    return [f'  {count} image(s) left out for classes not in the label list ({classes}); add those classes to '
            f'the labels file to keep the images{hints}']
