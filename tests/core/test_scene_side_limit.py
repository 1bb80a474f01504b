"""No import step may need more than 1 GB whatever the picture's width: the deep-zoom pyramid holds
a full-width strip, so a scene's side is bounded (mlcore.ingest.scenes.MAX_SIDE) and refused from
the header, before anything is decoded or stored."""

from __future__ import annotations

import pytest
from PIL import Image

from mlcore.ingest.scenes import MAX_SIDE, SceneError, validate_scene_image


@pytest.mark.parametrize("size", [(MAX_SIDE + 1, 2), (2, MAX_SIDE + 1)])
def test_a_side_above_the_limit_is_refused_from_the_header(tmp_path, size):
    path = tmp_path / "long.png"
    Image.new("1", size).save(path)  # a few hundred bytes, far under the pixel limit
    with pytest.raises(SceneError, match=f"above {MAX_SIDE:,} px"):
        validate_scene_image(path, max_pixels=10**10)


def test_a_side_at_the_limit_passes(tmp_path):
    path = tmp_path / "long.png"
    Image.new("1", (MAX_SIDE, 2)).save(path)
    assert validate_scene_image(path, max_pixels=10**10)[:2] == (MAX_SIDE, 2)
