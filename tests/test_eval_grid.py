"""Sample-grid PNG: tiles land where expected and survive the round trip."""

import numpy as np
import pytest
from PIL import Image

from eval.grid import save_sample_grid


def test_grid_layout_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(5, 6, 4, 3), dtype=np.uint8)  # B=5, H=6, W=4
    path = save_sample_grid(imgs, str(tmp_path / "sub" / "grid.png"), nrow=3)
    grid = np.asarray(Image.open(path).convert("RGB"))
    pad = 2
    assert grid.shape == (2 * (6 + pad) + pad, 3 * (4 + pad) + pad, 3)
    for i, img in enumerate(imgs):
        r, c = divmod(i, 3)
        y, x = pad + r * (6 + pad), pad + c * (4 + pad)
        np.testing.assert_array_equal(grid[y : y + 6, x : x + 4], img)
    # The empty sixth slot and the borders are padding.
    assert (grid[pad + 8 :, pad + 2 * 6 :] == 255).all()
    assert (grid[:pad] == 255).all()


def test_fewer_images_than_nrow_and_bad_input(tmp_path):
    imgs = np.zeros((2, 3, 3, 3), dtype=np.uint8)
    grid = np.asarray(Image.open(save_sample_grid(imgs, str(tmp_path / "g.png"), nrow=8)))
    assert grid.shape == (3 + 4, 2 * 5 + 2, 3)
    with pytest.raises(ValueError, match="uint8"):
        save_sample_grid(imgs.astype(np.float32), str(tmp_path / "bad.png"))
