"""LabSetup's new evidence (issue 11): the filter on the student's own image (test_image),
and the filter's synthesized negative in the same batch as the filter and its neighbours."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import lab_utils
from lab_utils import LabError
from lab_utils.session import ImageResponse


def test_image_response_places_the_image_among_the_probe_images():
    amap = np.full((1, 4, 4), 3.0, np.float32)
    amap[0, 0, 0] = 19.0  # mean 4.0, peak 19.0
    response = ImageResponse("cat.jpg", True, np.zeros((1, 8, 8, 3), np.uint8), amap,
                             np.array([0.0, 1.0, 2.0, 5.0, 9.0]))
    assert response.mean == pytest.approx(4.0)
    text = response.text()
    assert text.startswith("your image: cat.jpg; mean activation 4.0 (peak 19.0)")
    assert "higher than 60% of the 5 probe images (their median: 2.0, their highest: 9.0)" in text
    shipped = ImageResponse("tabby.jpg", False, response.image, amap, response.probe_means)
    assert shipped.text().startswith("a shipped photo (set test_image")
    assert shipped.titles() == ["tabby.jpg\nmean act. 4.0"]


@pytest.fixture
def small_setup(vgg16, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CHOICE_FILE", str(tmp_path / "lab-choice.yaml"))
    return lambda **p: lab_utils.check_parameters(**{"probe_limit": 30, "steps": 3, "vis_size": 32,
                                                     "n_neighbours": 2, **p})


@pytest.mark.weights
def test_test_image_gives_the_map_of_that_image(small_setup, tmp_path):
    own = tmp_path / "stripes.png"
    stripes = np.zeros((224, 224, 3), np.uint8)
    stripes[:, ::8] = 255
    Image.fromarray(stripes).save(own)
    setup = small_setup(test_image=str(own))
    response = setup.test_image_response()
    assert response.own and response.name == "stripes.png"
    assert np.array_equal(response.image[0], stripes)  # 224 px already: decoded as is
    direct = lab_utils.activation_maps(setup.model, setup.layer_name, setup.filter_index, stripes[None])
    assert np.array_equal(response.activation_map, direct)
    assert len(response.probe_means) == 30
    default = small_setup().test_image_response()
    assert not default.own and default.name == "n02123045_tabby.jpg"
    with pytest.raises(LabError, match="test_image .* does not exist"):
        small_setup(test_image=str(tmp_path / "missing.jpg"))
    (tmp_path / "not-an-image.jpg").write_text("hello")
    with pytest.raises(LabError, match="not a readable image"):
        small_setup(test_image=str(tmp_path / "not-an-image.jpg")).test_image_response()


@pytest.mark.weights
def test_filter_visualizations_end_with_the_filter_negative(small_setup):
    setup = small_setup()
    vis = setup.filter_visualizations()
    f = setup.filter_index
    assert [o.channel for o in vis.objectives] == [f] + setup.neighbours() + [f]
    assert [o.sign for o in vis.objectives] == [1, 1, 1, -1]
    # the objective of the negative is -(mean pre-ReLU output): the ascent raised it, i.e. lowered the output
    assert vis.objective_end[-1] > vis.objective_start[-1] and vis.objective_end[0] > vis.objective_start[0]
    assert not np.array_equal(vis.images[0], vis.images[-1])
    alone = setup.filter_visualization()  # notebooks 04 and 05: the positive, served from the same cache
    assert np.array_equal(alone.images[0], vis.images[0])
