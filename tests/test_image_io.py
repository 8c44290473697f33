"""Input images as the camera held them: EXIF orientation applied by data/image.read_image."""

import numpy as np
from PIL import Image

from threestudio_like.data.image import read_image


def test_exif_rotated_photo_is_read_upright(tmp_path):
    stored = np.zeros((2, 4, 3), dtype=np.uint8)  # 2 rows × 4 columns as stored
    stored[0, 0] = 255  # top-left pixel of the stored image
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: the stored image must be turned 90° clockwise to view
    img.save(tmp_path / "p.jpg", exif=exif, quality=100)
    Image.fromarray(stored).save(tmp_path / "plain.png")

    upright = read_image(tmp_path / "p.jpg")
    assert upright.shape == (4, 2, 3)
    # turned clockwise, the stored top-left corner is at the top right
    assert np.argmax(upright.sum(-1)) == np.ravel_multi_index((0, 1), (4, 2))
    assert read_image(tmp_path / "plain.png").shape == (2, 4, 3)
