"""utils/visualization.py: class names in any script are drawn legibly, never as rows of missing-glyph boxes."""
import logging

import numpy as np
from PIL import Image, ImageFont
import pytest

from utils import visualization


def _label(class_names, class_id=1):
    """The pixels of one detection's label (no score) drawn at the top of a grey 200 x 300 image."""
    picture = visualization.draw_detections(Image.new('RGB', (300, 200), (90, 90, 90)), [[0.3, 0.1, 0.9, 0.9]],
                                            [class_id], None, class_names)
    return np.asarray(picture)[:60]


def _system_has(font_file):
    try:
        ImageFont.truetype(font_file)
    except OSError:
        return False
    return True


@pytest.fixture
def no_system_fonts(monkeypatch):
    """Only Pillow's own font (ASCII letters), as on a system without TrueType fonts."""
    monkeypatch.setattr(visualization, 'FONT_FILES', ())
    monkeypatch.setattr(visualization, '_WARNED_NAMES', set())
    visualization._font_paths.cache_clear()
    visualization._fonts.cache_clear()
    yield
    visualization._font_paths.cache_clear()
    visualization._fonts.cache_clear()


@pytest.mark.skipif(not _system_has('DejaVuSans.ttf'), reason='needs DejaVuSans.ttf among the system fonts')
def test_cyrillic_and_accented_names_are_drawn_with_their_letters():
    # A font lacking these letters draws each as the same box, so two different words would look the same.
    assert not np.array_equal(_label(['none', 'пиво']), _label(['none', 'жжжж']))
    assert not np.array_equal(_label(['none', 'café']), _label(['none', 'cafè']))


def test_a_name_no_font_draws_is_labelled_by_class_id_once_warned(no_system_fonts, caplog):
    with caplog.at_level(logging.WARNING):
        chinese = _label(['none', 'x', '生抽酱油'], class_id=2)
        _label(['none', 'x', '生抽酱油'], class_id=2)
    assert np.array_equal(chinese, _label(None, class_id=2))   # 'class 2', as with no names
    assert sum('生抽酱油' in record.getMessage() for record in caplog.records) == 1


def test_accents_no_font_draws_are_dropped(no_system_fonts):
    assert np.array_equal(_label(['none', "Müsli d'or"]), _label(['none', "Musli d'or"]))
    assert visualization.drawable_name('jalapeño', 3) == 'jalapeno'
    assert visualization.drawable_name('пиво', 4) == 'class 4'
