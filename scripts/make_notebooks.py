"""Generate the five lab notebooks (without outputs) from this one source.

    python scripts/make_notebooks.py        # writes notebooks/0*.ipynb
    python scripts/refresh_notebooks.py     # then stores a reference run's outputs

Keeping the notebooks' text here makes the shared cells (parameters, checks,
student answer cells) identical in all five, and every change reviewable.
"""
import copy
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lab_utils.evidence import ANSWER_MARK, KIT_METADATA, NAMES_MARK, NAMES_PLACEHOLDER, PLACEHOLDER
from lab_utils.params import parameters_cell
from lab_utils.rubric import load_rubric

OUT = Path(__file__).resolve().parent.parent / "notebooks"
# Exercise solution notebooks: outside notebooks/, which nbval runs (a student version fails by design).
EXERCISES = OUT.parent / "exercises"

# Generated from the parameter schema (lab_utils/params.py): one place for names, defaults, docs.
PARAMETERS = parameters_cell()

CHECK = '''\
# Check the parameters (a bad value stops here with a one-line message).
import lab_utils as lab
from lab_utils import plots

setup = lab.check_parameters_from(globals())
print(setup.describe())'''

# Notebook 02 is where the choice is made: what the student typed into its parameters
# cell becomes the lab choice once it passes the checks (lab_utils/choice.py).
CHECK_AND_RECORD = CHECK.replace("check_parameters_from(globals())",
                                 "check_parameters_from(globals(), record_choice=True)  # saves what you typed above")
assert CHECK_AND_RECORD != CHECK


def student(title: str, prompt: str):
    """A cell the student writes: same marker everywhere, tagged 'student', its title in the
    kit's metadata (grading finds it even where the student rewrote the heading)."""
    return new_markdown_cell(f"{ANSWER_MARK} {title}\n\n*{prompt}*\n\n{PLACEHOLDER}",
                             metadata={"tags": ["student"], KIT_METADATA: {"answer": title}})


def names_cell():
    """Notebook 01's team names: the display name of the hand-in on the grader's pages."""
    return new_markdown_cell(f"{NAMES_MARK} team names\n\n*Who handed this in: each name on its own line, "
                             f"or separated by commas.*\n\n{NAMES_PLACEHOLDER}",
                             metadata={"tags": ["student", "names"], KIT_METADATA: {"answer": "team names"}})


def md(text):
    return new_markdown_cell(text.strip())


def code(src):
    return new_code_cell(src.strip())


def header(number, title, intro, check=CHECK):
    """The first cells of step *number*'s notebook. Its heading's first line is replaced from
    the rubric (``build_notebooks``): *title* stands where no rubric item scores the step."""
    return [
        md(f"# Step {number}: {title}\n\n{intro.strip()}\n\n"
           "Cells marked **✍️ YOUR ANSWER** are yours to write; everything else is generated. "
           "Change the parameters in the next cell (all indices are **0-based**), then *Run All*."),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        code(check),
    ]


NOTEBOOKS = {}

NOTEBOOKS["01_model_choice"] = header(1, "choose a pretrained model", """
We study a convolutional network trained on ImageNet (1000 classes). The kit's
default is **VGG16** (Simonyan & Zisserman, 2014): 13 convolution layers, every
kernel 3x3, ReLU after each, max-pooling between blocks, no residual branches.
That plain chain is what makes circuits easy to read: the input channels of a
filter are exactly the output channels of the conv layer before it.
""")[:1] + [names_cell()] + header(1, "", "")[1:] + [
    md("""
## The convolutional layers
One row per conv layer, 0-based. *Mid-level* layers have conv layers both
before and after them; *feeding layer* is the conv layer whose output channels
are the layer's input channels, found from the model graph (through pooling).
"""),
    code("""
layers = lab.describe_layers(setup.model)
print(layers.to_string(index=False))
print(f"\\n{len(layers)} conv layers, {int(layers.mid_level.sum())} mid-level; "
      f"parameters in the conv base: {setup.model.count_params():,}")
"""),
    md("""
## Does the network work? A check with the convolutional weights only
The lab uses only the convolutional layers, so that is what we check. Each shipped
image is described by the network's **pooled deep features**: the mean over positions
of the last conv layer's output (512 numbers). For a few query images we look for
their **nearest neighbours** among 200 shipped images (cosine similarity). The shipped
set has one image per class, so a neighbour cannot share the query's class; it counts
as right when it is in the same **coarse ImageNet group** (WordNet: "feline", "bird",
"wheeled vehicle", ...). The same architecture with **random weights** is the
baseline: if the loaded weights had learned nothing, the two scores would be alike.
"""),
    code("""
check = setup.model_check()
print(check.text())
plots.as_jpeg(plots.retrieval_figure(check))
"""),
    md("""
## Classify a few images (when the classifier top is available)
The full network (with its 3 dense classifier layers) predicts a class for each query
image: its top 5 labels and probabilities. The classifier weights are a separate 500 MB
download; where they cannot be had, this cell says so and the lab goes on: every later
step uses only the convolutional layers, which the check above verified.
"""),
    code("""
demo = lab.demo_images()
full_model = lab.load_full_model_or_none(setup.model_name)
if full_model is not None:
    predictions = lab.top5_classification(full_model, demo.images, true_wnids=demo.wnids)
    print(predictions[["image", "rank", "label", "probability", "true_in_top"]].to_string(
        index=False, float_format="{:.3f}".format))
    plots.prediction_panel(demo.images, predictions);
else:
    plots.image_grid(demo.images, titles=[f"true class: {label}" for label in demo.labels], ncols=4,
                     title="Images the full network would classify");
"""),
    student("what does the check show?", "Compare the two retrieval scores and the chance level, and look at the "
            "neighbours. What do they tell you about the loaded weights? Where does the trained network go wrong, "
            "and is the mistake understandable (what do the wrong neighbours share with the query)? "
            "What can this check not tell you that a classification would?"),
    student("why this model?", "Explain the choice of model in 3-5 sentences: depth, 3x3 convolutions, "
            "no residual branches, trained on ImageNet. What would make circuits harder to read in a ResNet or Inception?"),
]

NOTEBOOKS["02_filter_selection"] = header(2, "choose a multi-channel filter in a mid-level layer", """
A **filter** is the whole kernel of one output channel of a conv layer
(`kernel[:, :, :, filter_index]`, e.g. 3x3x128 for `block3_conv1`). We look at
the chosen filter twice: what image excites it most (feature visualization by
gradient ascent), and which real ImageNet classes and images excite it most.
""", check=CHECK_AND_RECORD) + [
    md("## Mid-level candidates\nThe rubric asks for a *mid-level* layer: \"a few convolutional layers "
       "before and after\" it, taken here as **at least two conv layers before and two after**. "
       "These are the candidates (another layer works too, with a note in the check above):"),
    code("""
layers = lab.describe_layers(setup.model)
candidates = layers[layers.mid_level]
print(candidates[["conv_index", "layer", "in_channels", "out_channels", "feeding_layer"]].to_string(index=False))
print(f"\\nChosen: {setup.layer_name}, filter {setup.filter_index} of "
      f"{setup.model.get_layer(setup.layer_name).filters} (0-based)")
"""),
    md("""
## What does the filter respond to? Feature visualization
Gradient ascent changes an input image so that the filter's mean output grows.
The image is parameterized in a decorrelated Fourier basis and jittered at each
step (Olah et al., *Feature Visualization*, Distill 2017); the objective is the
filter's output **before** its ReLU, so that it has a gradient even where the
filter is silent on the start image. The neighbouring filters of the same layer
are shown for context: they were optimized in the same batch.
"""),
    code("""
vis = setup.filter_visualizations()  # the filter, its neighbours, then the filter's negative
print(f"filter {setup.filter_index}: mean pre-ReLU output {vis.objective_start[0]:.1f} on the start image "
      f"-> {vis.objective_end[0]:.1f} after {setup.steps} steps; its negative: "
      f"{-vis.objective_start[-1]:.1f} -> {-vis.objective_end[-1]:.1f}")
titles = [f"filter {o.channel}" + (" (chosen)" if o.channel == setup.filter_index else "") if o.sign > 0
          else f"filter {o.channel}: negative\\n(lowers its output)" for o in vis.objectives]
fig = plots.image_grid(vis.images, titles, ncols=5, title=f"{setup.layer_name}: synthesized images")
"""),
    md("""
## Which classes and images excite it? Probing the dataset
All probe images go through the network once, in batches; for each image we keep
the **mean activation** (after ReLU, averaged over positions) of every filter of
the layer, so another filter of the same layer needs no new pass (the scan is
cached on disk). A class's score is the mean over its images, shown with the
number of images behind it and a 95% bootstrap interval of that mean.

**What this can support.** The kit's own probe set has *one* image per class:
there a "top class" is one photo, its interval is undefined (`NaN`), and the
class ranking is the image ranking again. Claims about classes ("the filter
prefers dogs") need several images per class: `probe_set = "imagenet-mini"`
(online: its train and val images, about 39 per class; `per_class = 50` takes
them all, as the course's seed notebooks did, `per_class = 10` a quicker 10,000)
or your own folder with one sub-folder per class. Even with 40 images a class
mean says what the filter does *on average* over a class, not why; overlapping
intervals mean the ranking between those classes is not settled. Claims about
what is *in* the top images (textures, parts, colours) need no class statistics.
"""),
    code("""
scan = setup.scan()
print(f"{scan.n_images} probe images scanned at {setup.layer_name} ({scan.means.shape[1]} filters each)")
top_classes = setup.top_classes()
print(lab.format_class_table(top_classes))
"""),
    md("""
Coarse groups (WordNet 3.0 hypernyms of the classes, groups of 5 to 60 classes,
`data/imagenet_groups.json`) put several images behind each row even with one
image per class: a statement such as "the filter prefers birds" needs a group
whose interval sits above the others, not one photo.
"""),
    code("""
top_groups = setup.top_groups()
print(lab.format_groups(top_groups))
"""),
    code("""
fig = plots.class_bar_chart(top_classes, setup.layer_name, setup.filter_index)
"""),
    md("Top images, with the filter's activation map overlaid (bright = strong response):"),
    code("""
top_images = setup.top_images()
print(top_images[["rank", "image", "class", "mean_activation"]].to_string(index=False, float_format="{:.2f}".format))
images, maps, titles = setup.top_image_maps(8)
plots.as_jpeg(plots.top_images_overlay(images, maps, titles,
                                       title=f"Top images for {setup.layer_name} filter {setup.filter_index}"))
"""),
    md("""
## The other end: what the filter is tuned against
After its ReLU the filter is 0 on many images alike; *before* the ReLU its output
still ranks them. These probe images drive it lowest: what it responds against.
The synthesized "negative" above (last image) is the same question asked by
gradient descent: the image that lowers the filter's pre-ReLU output most.
"""),
    code("""
bottom = setup.bottom_images()
print(bottom[["rank", "image", "class", "mean_pre_activation"]].to_string(index=False, float_format="{:.2f}".format))
plots.as_jpeg(plots.image_grid(
    setup.pixels_of(bottom.head(8)), plots.image_titles(bottom.head(8), "mean_pre_activation", "pre-ReLU"),
    ncols=4, title=f"Lowest pre-ReLU output of {setup.layer_name} filter {setup.filter_index}"))
"""),
    md("""
## Explore the layer's filters
The explorer answers from the scan above, without a new pass: pick a layer (the
mid-level candidates; another layer is scanned once) and a filter to see its top
images, its top classes with the number of images behind each, the 8 filters whose
mean activations correlate most with it over the probe images, and its weight-norm
profile (how few input channels carry most of its squared L2 weight). **use this
filter** saves the layer and filter as your lab choice (notebooks 03-05 use it);
then run this notebook again from the top.
"""),
    code("""
explorer = setup.explorer()
explorer
"""),
    md("""
### Layer atlas
The same information without widgets (and in the rendered HTML): one tile per filter
of the layer, its top probe image cropped around where the filter peaks, captioned
with its peak mean activation. The chosen filter is framed red, its most similar
filters orange. (Every filter's *synthesized* image, for a whole layer, is one
command away: `./render.sh --atlas block3_conv1`, a few minutes on a laptop.)
"""),
    code("""
explorer.atlas()
"""),
    student("why this layer and this filter", "Why this layer (what makes it mid-level, and what do you "
            "expect its filters to detect) and this filter (what in the synthesized images or the top "
            "images made you pick it)? If you tried other filters first, say which and why you moved on."),
    student("hypothesis", "What does this filter extract? State one hypothesis (a texture, a shape, a part, "
            "a colour pattern...) and give your reasons from the synthesized image, the top classes and "
            "where the activation maps light up. Notebook 04 will test it."),
]

NOTEBOOKS["03_channel_analysis"] = header(3, "analyze each channel of the filter", """
A filter of `block3_conv1` sums over 128 input channels. Its **single-channel
filters** are the 3x3 slices `kernel[:, :, c, filter_index]`, one per input
channel `c`. The **L2 norm** of a slice (square root of the sum of its squared
weights) measures how strongly channel `c` can drive the filter. It is a
property of the weights, not an activation.
""") + [
    md("""
## The strongest single-channel filters
Near-zero slices are dropped, the rest ranked by L2 norm; the top `top_k` are
kept. Two rules categorize a slice, and they disagree on some:
- **by_sign_count**: more positive than negative coefficients = excitatory;
- **by_sum**: the sum of the coefficients is positive = excitatory (the net
  effect on a uniform input).

A tie is *balanced*. The `category` used in every table and figure of the kit is named below.
"""),
    code("""
table = setup.channel_table()
from lab_utils.circuits import CATEGORY_RULE, CATEGORY_RULE_TEXT, category_counts, format_channel_table
print(f"{setup.layer_name} filter {setup.filter_index}: {table.attrs['n_channels']} input channels, "
      f"{table.attrs['n_near_zero']} near-zero slices dropped, top {len(table)} kept")
print(f"category rule used: {CATEGORY_RULE} ({CATEGORY_RULE_TEXT[CATEGORY_RULE]})\\n")
print(format_channel_table(table))
print("\\ncounts by", CATEGORY_RULE, category_counts(table))
disagree = table[~table.rules_agree]
print("rules disagree on channels:", ", ".join(str(c) for c in disagree.channel) or "none")
"""),
    md("## Where is the cut? The norms of all input channels\nRed bars are kept; the dashed line is the cut."),
    code("""
fig = plots.norm_distribution(setup.channel_norms(), table)
"""),
    md("## The kept single-channel filters\nEach 3x3 slice with its values; one colour scale for all, centred on 0 (red excites, blue inhibits)."),
    code("""
fig = plots.kernel_heatmaps(table)
"""),
    student("what do the weights say?", "Which channels dominate? Are the strongest slices excitatory or "
            "inhibitory, and do their spatial patterns (centre vs surround, one side vs the other) suggest "
            "orientation or position preferences?"),
]

NOTEBOOKS["04_channel_visualization"] = header(4, "visualize the channels and explain the circuit", """
Each kept input channel `c` is an output channel of the **feeding layer**: the
conv layer before the filter's layer in the model graph. Max-pooling keeps
channels, so channel `c` of `block2_pool` is channel `c` of `block2_conv2`; the
kit finds the feeding layer from the graph and visualizes channel `c` **there**.
""") + [
    code("""
table = setup.channel_table()
print(f"{setup.layer_name} is fed by {setup.feeder} (from the model graph); "
      f"visualizing its channels {', '.join(str(c) for c in table.channel)}")
vis = setup.channel_visualizations(table)
for c, a, b in zip(vis.channels, vis.objective_start, vis.objective_end):
    print(f"  {setup.feeder} channel {c:3d}: mean pre-ReLU output {a:8.1f} -> {b:8.1f}")
"""),
    md("""
## The circuit
Each input channel's synthesized image (its "name") above its 3x3 weights into
the filter, as in the Distill weight explorer / OpenAI Microscope; the filter's
own image comes first.
"""),
    code("""
filter_image = setup.filter_visualization().images[0]
fig = plots.circuit_figure(vis.images, table, setup.feeder, filter_image=filter_image)
"""),
    md("""
## Each input channel in the dataset
What excites each kept input channel among the probe images, beside its
synthesized image: a second name for each channel, from real images. (The scan
of notebook 02 kept every conv layer's means on its way: no new pass.)
"""),
    code("""
examples = setup.channel_examples(table)
plots.as_jpeg(plots.channel_examples(examples, setup.pixels_of, setup.feeder, vis.images))
"""),
    md("""
## Synthetic stimuli: tuning curves
Gratings at 12 orientations and 7 periods (4 phases each, the strongest kept) and
plain colour fields, through the network in one pass: does the filter prefer an
orientation, a scale, a colour? A hypothesis about edges, stripes or colours should
show here.
"""),
    code("""
tuning = setup.tuning()
print(tuning.text())
fig = plots.tuning_figure(tuning)
"""),
    md("""
## Your own image
Test the hypothesis on an image you choose: one that *should* excite the filter
if the hypothesis is right, or one that should not. Set `test_image` in the
parameters cell to a file path or a URL; until then a shipped photo stands in.
The number to compare: where its mean activation falls among the probe images'.
"""),
    code("""
response = setup.test_image_response()
print(response.text())
plots.as_jpeg(plots.top_images_overlay(response.image, response.activation_map, response.titles(), ncols=1,
                                       title=f"{setup.layer_name} filter {setup.filter_index} on {response.name}"))
"""),
    md("""
## An experiment: ablate the inputs
Weights say how the filter *could* combine its inputs; an experiment measures it.
On the filter's top probe images, the filter's mean activation is recomputed
from its layer's input with some input channels set to zero: the kept excitatory
ones, the kept inhibitory ones, and every channel but the kept ones (how much of
the response the strongest channels explain by themselves).
"""),
    code("""
ablation = setup.ablation(table)
print(lab.format_ablation(ablation))
print()
print(ablation.paragraph())
fig = plots.ablation_chart(ablation)
"""),
    md("""
## Vocabulary (Olah et al., *Zoom In: An Introduction to Circuits*, Distill 2020)
- **excitation / inhibition**: positive weights make the filter fire when the input channel fires, negative weights suppress it;
- **polysemantic**: a channel responding to several unrelated features;
- **pose / orientation invariance**: the filter responds to a feature whatever its orientation, often by **unioning over cases** (adding excitatory channels that detect the feature in different orientations);
- **equivariance**: rotated or mirrored copies of one feature spread over several channels, with correspondingly rotated weights.
"""),
    student("the circuit", "Describe the circuit with the vocabulary above: which input features excite the "
            "filter, which inhibit it, and how the 3x3 weight patterns combine them."),
    student("verdict on the hypothesis", "Is the hypothesis of notebook 02 supported or refuted by the circuit? Why?"),
]

NOTEBOOKS["05_summary"] = header(5, "summary of the circuit", """
One page with the evidence: the filter's synthesized image, its top classes and
images, the circuit (channel images, weights, categories) and the verdict. The
numbers are generated from the cached results of notebooks 02-04 (or computed
now if they are missing); the interpretation is yours.
""") + [
    code("""
print(setup.summary_paragraph())
"""),
    code("""
fig = plots.image_grid(setup.filter_visualization().images, [f"{setup.layer_name} filter {setup.filter_index}"],
                       ncols=1, cell=3.0)
fig = plots.class_bar_chart(setup.top_classes(), setup.layer_name, setup.filter_index)
"""),
    code("""
images, maps, titles = setup.top_image_maps(8)
plots.as_jpeg(plots.top_images_overlay(images, maps, titles, title="Top images with activation maps"))
"""),
    code("""
table = setup.channel_table()
fig = plots.circuit_figure(setup.channel_visualizations(table).images, table, setup.feeder,
                           filter_image=setup.filter_visualization().images[0])
"""),
    student("interpretation", "In one paragraph: what does the filter detect, and how is it built from "
            "its input channels?"),
    student("verdict", "Hypothesis supported or refuted, and the strongest piece of evidence either way."),
]


# ------------------------------------------------------------------ exercise variants
# Solution versions (exercises/*_solution.ipynb); `python -m lab_utils.exercises` strips the
# marked regions into the student versions. Each exercise: a task, the cell the student
# writes (solution between the markers), and a check cell that prints a CHECK line.
EXERCISE_CHECK = "from lab_utils import exercises\n_ = exercises.{call}"

ASCENT_EXERCISE = [
    md("""
## Exercise: one gradient-ascent step
Write `ascent_step(image, learning_rate)`: the image after **one** step of gradient
ascent on the chosen filter. `image` is float32 `(1, H, W, 3)`, RGB in 0..255 (before
the model's preprocessing). The value to raise is the filter's **mean pre-ReLU output**
(`to_layer` below gives the layer's output before its ReLU; apply
`lab.preprocess(setup.model, x)` first). Take its gradient `g` with respect to the
image (`tf.GradientTape`), normalize it by its L2 norm (`tf.norm(g)`), and return
`image + learning_rate * g / ||g||` as a numpy array. The check compares your step with
`lab_utils.exercises.reference_ascent_step` on a random image.
"""),
    code("""
import tensorflow as tf

to_layer = lab.submodel(setup.model, setup.layer_name, pre_activation=True)


def ascent_step(image, learning_rate):
    \"\"\"image: float32 (1, H, W, 3), RGB 0..255; returns the image after one ascent step.\"\"\"
    ### BEGIN SOLUTION: return image
    x = tf.convert_to_tensor(image)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_mean(to_layer(lab.preprocess(setup.model, x))[..., setup.filter_index])
    g = tape.gradient(value, x)
    return (x + learning_rate * g / tf.norm(g)).numpy()
    ### END SOLUTION
"""),
    code(EXERCISE_CHECK.format(call="check_ascent_step(ascent_step, setup)")),
    md("Your step, repeated 20 times from grey noise (no jitter, no Fourier basis: compare with the kit's image above):"),
    code("""
import numpy as np

image = (128 + 20 * np.random.default_rng(setup.seed).standard_normal((1, 64, 64, 3))).astype("float32")
for _ in range(20):
    image = np.clip(ascent_step(image, 200.0), 0, 255)
fig = plots.image_grid(image.astype("uint8"), [f"20 of your steps, filter {setup.filter_index}"], ncols=1, cell=2.6)
"""),
]

CHANNEL_EXERCISES = [
    md("""
## Exercise 1: the L2 norm of each single-channel filter
`kernel` below is the filter, shape `(3, 3, c_in)`; its single-channel filter `c` is
`kernel[:, :, c]`. Write `norms`: the L2 norm of every slice (square root of the sum of
its squared weights), a numpy array of shape `(c_in,)`, index = input channel.
"""),
    code("""
import numpy as np

kernel = setup.model.get_layer(setup.layer_name).kernel.numpy()[:, :, :, setup.filter_index]  # (3, 3, c_in)
### BEGIN SOLUTION: norms = None
norms = np.sqrt((kernel ** 2).sum(axis=(0, 1)))
### END SOLUTION
"""),
    code(EXERCISE_CHECK.format(call="check_channel_norms(norms, setup)")),
    md("""
## Exercise 2: rank them
Write `top_channels`: the `setup.top_k` input channels with the largest norms, strongest
first, as 0-based channel numbers (ties: the lower channel first).
"""),
    code("""
### BEGIN SOLUTION: top_channels = None
top_channels = [int(c) for c in np.argsort(-norms, kind="stable")[:setup.top_k]]
### END SOLUTION
"""),
    code(EXERCISE_CHECK.format(call="check_top_channels(top_channels, setup)")),
    md("""
## Exercise 3: the two categorization rules
For each channel of `top_channels` (in that order) write its category by both rules, as
lists of `"excitatory"`, `"inhibitory"` or `"balanced"`:
- `by_sign_count`: more positive than negative weights: excitatory; more negative:
  inhibitory; as many: balanced;
- `by_sum`: the sum of the 9 weights is positive: excitatory; negative: inhibitory; zero
  (within 1e-6 of the slice's sum of absolute values): balanced.
"""),
    code("""
### BEGIN SOLUTION: by_sign_count = None; by_sum = None
def by_signs(w):
    positive, negative = int((w > 0).sum()), int((w < 0).sum())
    return "excitatory" if positive > negative else "inhibitory" if negative > positive else "balanced"


def by_total(w):
    total = float(w.sum())
    return "balanced" if abs(total) <= 1e-6 * float(np.abs(w).sum()) else "excitatory" if total > 0 else "inhibitory"


by_sign_count = [by_signs(kernel[:, :, c]) for c in top_channels]
by_sum = [by_total(kernel[:, :, c]) for c in top_channels]
### END SOLUTION
"""),
    code(EXERCISE_CHECK.format(call="check_categories(by_sign_count, by_sum, setup)")),
]


def exercise_variants() -> dict:
    """{file stem: cells} of the exercise solution notebooks: notebook 02 with the ascent
    step to write (after its feature visualization), notebook 03 with the norms, the ranking
    and the two rules to write (before the kit's own table)."""
    two = list(NOTEBOOKS["02_filter_selection"])
    at = next(i for i, c in enumerate(two) if "filter_visualizations()" in c.source) + 1
    three = list(NOTEBOOKS["03_channel_analysis"])
    return {"02_filter_selection_solution": two[:at] + ASCENT_EXERCISE + two[at:],
            "03_channel_analysis_solution": three[:3] + CHANNEL_EXERCISES + three[3:]}


def build_notebooks(rubric=None) -> dict:
    """{notebook name: NotebookNode without outputs}: what main() writes. Each step's heading
    comes from *rubric* (default ``data/rubric.yaml``); each notebook carries its lab step in
    the kit's metadata (grading recognizes renamed files by it)."""
    return {name: _notebook(name, cells, rubric) for name, cells in NOTEBOOKS.items()}


def build_exercises(rubric=None) -> dict:
    """{file stem: NotebookNode}: the exercise solution notebooks (``exercise_variants``)."""
    books = {name: _notebook(name, cells, rubric) for name, cells in exercise_variants().items()}
    for nb in books.values():
        nb.metadata[KIT_METADATA]["exercise"] = "solution"
    return books


def _notebook(name: str, cells: list, rubric=None):
    """One notebook: *cells* with the step's heading from *rubric*, the kit's metadata
    (its lab step and name: grading recognizes renamed files by it) and stable cell ids."""
    rubric = load_rubric() if rubric is None else rubric
    step = int(name[:2])
    cells = copy.deepcopy(cells)
    first, rest = cells[0].source.split("\n", 1)
    default_title = first.split(": ", 1)[1]
    cells[0].source = f"# {rubric.step_heading(step, default_title)}\n{rest}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        KIT_METADATA: {"step": step, "notebook": name.replace("_solution", "")}})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:02d}"
    return nb


def main():
    OUT.mkdir(exist_ok=True)
    for name, nb in build_notebooks().items():
        nbformat.write(nb, OUT / f"{name}.ipynb")
        print("wrote", OUT / f"{name}.ipynb")
    EXERCISES.mkdir(exist_ok=True)
    for name, nb in build_exercises().items():
        nbformat.write(nb, EXERCISES / f"{name}.ipynb")
        print("wrote", EXERCISES / f"{name}.ipynb")


if __name__ == "__main__":
    main()
