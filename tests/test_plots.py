"""dlfun.plots: image grids put every image where it belongs, scaled as asked, and write PNGs."""

import numpy as np
import pytest

from dlfun.plots import _mosaic, _scaled, plot_image_grid


def test_mosaic_tiles_row_by_row_with_masked_gaps_and_empty_cells():
    images = [np.full((2, 3), v, np.float32) for v in (0.1, 0.2, 0.3, 0.4, 0.5)]
    m = _mosaic(images, rows=2, cols=3)
    assert m.shape == (2 * 2 + 1, 3 * 3 + 2)
    for i, v in enumerate((0.1, 0.2, 0.3, 0.4, 0.5)):
        r, c = divmod(i, 3)
        cell = m[r * 3:r * 3 + 2, c * 4:c * 4 + 3]
        assert not cell.mask.any() and np.all(cell == np.float32(v))
    assert m.mask[2].all() and m.mask[:, 3].all() and m.mask[:, 7].all()  # the gaps
    assert m.mask[3:, 8:].all()  # the sixth cell has no image


def test_colour_mosaic_is_white_between_images():
    images = [np.zeros((2, 2, 3), np.float32)] * 2
    m = _mosaic(images, rows=1, cols=2)
    assert m.shape == (2, 5, 3) and not np.ma.isMaskedArray(m)
    assert np.all(m[:, 2] == 1.0) and np.all(m[:, :2] == 0.0) and np.all(m[:, 3:] == 0.0)


def test_scaling_is_per_image_or_fixed():
    img = np.array([[2.0, 4.0], [3.0, 4.0]])
    np.testing.assert_allclose(_scaled(img), [[0.0, 1.0], [0.5, 1.0]], atol=1e-6)
    np.testing.assert_allclose(_scaled(img, (0.0, 8.0)), [[0.25, 0.5], [0.375, 0.5]])
    assert _scaled(np.ones((4, 4, 1))).shape == (4, 4)  # one channel drawn grey


@pytest.mark.parametrize("shape,titles", [((13, 8, 8), None), ((5, 6, 6, 3), None),
                                          ((4, 8, 8, 1), ["a", "b", "c", "d"])])
def test_grids_are_written_as_png(tmp_path, shape, titles):
    path = plot_image_grid(np.random.default_rng(0).random(shape), tmp_path / "g.png",
                           titles=titles, cols=4, title="grid")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
