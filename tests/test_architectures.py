"""The conv-layer table of architectures.py against the Keras graphs (random
weights: offline), and render.sh's TensorFlow-free parameter check against the
checks on the model graph (same accept/reject, same messages)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab_utils import LabError, architectures, models
from lab_utils.params import DEFAULTS, check_values

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=["vgg16", "vgg19"])
def graph(request):
    return request.param, models.load_model(request.param, weights="random")


def test_conv_table_matches_the_keras_graph(graph):
    name, model = graph
    from_graph = []
    for layer_name in models.conv_layers(model):
        layer = model.get_layer(layer_name)
        kh, kw, c_in, c_out = layer.kernel.shape
        try:
            feeder = models.feeding_layer(model, layer_name)
        except LabError:
            feeder = None
        from_graph.append(architectures.ConvSpec(layer_name, (kh, kw), int(c_in), int(c_out), feeder))
    assert architectures.conv_specs(name) == from_graph
    others = [layer.name for layer in model.layers
              if layer.name not in models.conv_layers(model) and not layer.name.startswith("input_layer")]
    assert architectures.other_layer_names(name) == others


def graph_check(model, layer_name, filter_index, top_k):
    """What check_parameters does on a built model (the reference for the table)."""
    models.check_filter(model, layer_name, filter_index)
    models.feeding_layer(model, layer_name)
    n_in = model.get_layer(layer_name).kernel.shape[2]
    if top_k > n_in:
        raise LabError(f"top_k must be at most {n_in} (the input channels of {layer_name}), got {top_k}")


@pytest.mark.parametrize("layer_name,filter_index,top_k", [
    ("block3_conv1", 31, 10),      # the default: accepted
    ("block5_conv3", 511, 512),    # last filter, every input channel
    ("block2_conv1", 127, 64),
    ("block9_conv9", 0, 10),       # unknown layer
    ("block1_pool", 0, 10),        # a layer, but not a conv layer
    ("block1_conv1", 0, 3),        # reads the image: no feeding conv layer
    ("block3_conv1", 256, 10),     # filter out of range
    ("block3_conv1", -1, 10),
    ("block3_conv1", 2.0, 10),     # not an integer
    ("block3_conv1", 31, 129),     # top_k above the input channels
])
def test_tensorflow_free_check_agrees_with_the_graph(graph, layer_name, filter_index, top_k):
    name, model = graph
    try:
        graph_check(model, layer_name, filter_index, top_k)
        expected = None
    except LabError as exc:
        expected = str(exc)
    try:
        architectures.check_circuit(name, layer_name, filter_index, top_k)
        got = None
    except LabError as exc:
        got = str(exc)
    assert got == expected


def test_the_input_layer_is_a_layer_but_not_a_conv_layer(graph):
    name, model = graph
    input_name = model.layers[0].name
    with pytest.raises(LabError, match="is not a conv layer") as from_graph:
        models.get_conv_layer(model, input_name)
    with pytest.raises(LabError) as from_table:
        architectures.check_circuit(name, input_name, 0, 1)
    assert str(from_table.value) == str(from_graph.value)


def test_check_values_rejects_a_bad_layer_and_keeps_defaults():
    assert check_values({}) == DEFAULTS
    with pytest.raises(LabError, match="unknown layer 'block3_conv9'; conv layers of vgg16: block1_conv1"):
        check_values({"layer_name": "block3_conv9"})
    with pytest.raises(LabError, match="unknown model 'resnet50'; valid: vgg16, vgg19"):
        check_values({"model_name": "resnet50"})


def test_render_check_does_not_import_tensorflow():
    # render.sh checks parameters in a process that never needs TensorFlow (~7 s saved per render)
    code = ("import sys; from lab_utils.params import check_values; "
            "check_values({'layer_name': 'block4_conv1', 'filter_index': 7}); "
            "import lab_utils.render; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_receptive_fields_are_the_published_vgg16_values():
    from lab_utils.architectures import receptive_field

    # Araujo et al., "Computing Receptive Fields of CNNs" (Distill 2019), VGG16 table
    expected = {"block1_conv1": 3, "block1_conv2": 5, "block2_conv1": 10, "block2_conv2": 14,
                "block3_conv1": 24, "block3_conv3": 40, "block4_conv1": 60, "block4_conv3": 92,
                "block5_conv1": 132, "block5_conv3": 196}
    assert {name: receptive_field("vgg16", name) for name in expected} == expected
    assert receptive_field("vgg19", "block3_conv4") == 48
    with pytest.raises(LabError):
        receptive_field("vgg16", "block9_conv9")
