"""Step 3: the single-channel filters of one filter, ranked and categorized.

For filter ``f`` of a conv layer with kernel ``K`` of shape (kh, kw, c_in, c_out),
the single-channel filter of input channel ``c`` is ``K[:, :, c, f]``. Its L2 norm
(``sqrt(sum of squared weights)``, in weight units, *not* an activation) ranks how
strongly input channel c drives the filter.

Two categorization rules are in use; the kit reports both:
- ``by_sign_count``: majority of coefficient signs (more positive -> excitatory);
- ``by_sum``: sign of the sum of the coefficients (the response to a uniform
  input: net excitation or inhibition).
A tie (equal counts, or a sum that is zero within rounding) is "balanced".
The tables' ``category`` column uses ``CATEGORY_RULE``.

``ChannelTableRecord`` is a table as plain data (JSON next to a render's notebooks);
importing this module loads no TensorFlow (``models`` is imported where weights are read).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import LabError

CATEGORY_RULE = "by_sum"
CATEGORY_RULE_TEXT = {
    "by_sum": "sign of the sum of the 3x3 weights (net effect on a uniform input)",
    "by_sign_count": "majority of the signs of the 3x3 weights",
}
# A slice whose norm is below this fraction of the filter's largest slice norm is
# treated as zero ("near-zero slice"): it cannot move the filter's output.
NEAR_ZERO_FRACTION = 1e-3
# |sum| below this fraction of the slice's L1 norm counts as a zero sum (balanced).
ZERO_SUM_FRACTION = 1e-6


def filter_kernel(model, layer_name: str, filter_index: int) -> np.ndarray:
    """The filter's weights, float64 array (kh, kw, c_in): ``kernel[:, :, :, f]``."""
    # TensorFlow is imported only here: the record (ChannelTableRecord) needs none
    from .models import check_filter, get_conv_layer

    f = check_filter(model, layer_name, filter_index)
    kernel = get_conv_layer(model, layer_name).kernel.numpy()
    return kernel[:, :, :, f].astype(np.float64)


def channel_norms(model, layer_name: str, filter_index: int) -> np.ndarray:
    """L2 norm of every single-channel filter, array (c_in,), index = input channel."""
    w = filter_kernel(model, layer_name, filter_index)
    return np.sqrt((w ** 2).sum(axis=(0, 1)))


def _categorize(values: np.ndarray, l1: np.ndarray | None = None) -> list[str]:
    out = []
    for i, v in enumerate(values):
        zero = abs(v) <= (ZERO_SUM_FRACTION * l1[i] if l1 is not None else 0)
        out.append("balanced" if zero else ("excitatory" if v > 0 else "inhibitory"))
    return out


def channel_table(model, layer_name: str, filter_index: int, top_k: int = 10):
    """The top ``top_k`` single-channel filters of a filter, by L2 norm.

    Returns a DataFrame, one row per kept input channel, ordered by ``l2_norm``
    descending (ties: lower channel first), with columns:
    ``rank`` (1 = strongest), ``channel`` (0-based input channel), ``l2_norm``,
    ``n_positive``, ``n_negative`` (coefficient counts of the kh x kw slice),
    ``weight_sum``, ``weight_mean``, ``by_sign_count``, ``by_sum``, ``category``
    (= the ``CATEGORY_RULE`` column), ``rules_agree``, ``weights`` (the slice,
    kh x kw nested list). Near-zero slices are dropped before taking the top k.
    ``attrs``: layer, filter_index, rule, n_channels (c_in), n_near_zero, cut_norm (the
    last kept norm) and total_sq_norm (sum of every channel's squared L2 norm: the filter's
    sum of squared weights, the denominator of ``ChannelTableRecord``'s shares).
    """
    import pandas as pd

    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise LabError(f"top_k must be an integer >= 1, got {top_k!r}")
    w = filter_kernel(model, layer_name, filter_index)
    norms = np.sqrt((w ** 2).sum(axis=(0, 1)))
    keep = np.flatnonzero(norms > NEAR_ZERO_FRACTION * norms.max()) if norms.max() > 0 else np.array([], int)
    order = keep[np.lexsort((keep, -norms[keep]))][:top_k]
    slices = w[:, :, order]  # (kh, kw, k)
    n_pos = (slices > 0).sum(axis=(0, 1))
    n_neg = (slices < 0).sum(axis=(0, 1))
    sums = slices.sum(axis=(0, 1))
    l1 = np.abs(slices).sum(axis=(0, 1))
    by_count = _categorize((n_pos - n_neg).astype(float))
    by_sum = _categorize(sums, l1)
    df = pd.DataFrame({
        "rank": np.arange(1, len(order) + 1),
        "channel": order.astype(int),
        "l2_norm": norms[order],
        "n_positive": n_pos.astype(int),
        "n_negative": n_neg.astype(int),
        "weight_sum": sums,
        "weight_mean": sums / (w.shape[0] * w.shape[1]),
        "by_sign_count": by_count,
        "by_sum": by_sum,
    })
    df["category"] = df[CATEGORY_RULE]
    df["rules_agree"] = df["by_sign_count"] == df["by_sum"]
    df["weights"] = [slices[:, :, i].tolist() for i in range(len(order))]
    df.attrs.update(layer=layer_name, filter_index=int(filter_index), rule=CATEGORY_RULE,
                    n_channels=int(w.shape[2]), n_near_zero=int(w.shape[2] - len(keep)),
                    cut_norm=float(norms[order[-1]]) if len(order) else 0.0,
                    total_sq_norm=float((norms ** 2).sum()))
    return df


# A render leaves its channel table as JSON next to the executed notebooks (render.py sets
# RECORD_DIR_ENV for its kernel; ``session.LabSetup.channel_table`` writes it): the sweep
# (``lab_utils.sweep``) compares pairs from it without parsing printed text.
RECORD_DIR_ENV = "LAB_RECORD_DIR"
RECORD_FILE = "channel-table.json"
RECORD_KIND = "lab_utils.channel_table/1"


@dataclass(frozen=True)
class ChannelRow:
    """One kept input channel. ``rank``: 1 = strongest; ``channel``: 0-based input channel of
    the feeding layer; ``l2_norm``: the slice's L2 norm (weight units); ``share``: its squared
    norm over the filter's sum of squared weights (0..1, all c_in channels, not only the kept
    ones); ``category``: by ``CATEGORY_RULE``."""

    rank: int
    channel: int
    l2_norm: float
    share: float
    category: str


@dataclass(frozen=True)
class ChannelTableRecord:
    """The channel table of one (layer, filter) as plain data (JSON, pickle)."""

    model_name: str
    layer_name: str
    filter_index: int
    top_k: int
    n_channels: int
    n_near_zero: int
    rule: str
    rows: tuple[ChannelRow, ...]

    @property
    def channels(self) -> list[int]:
        return [r.channel for r in self.rows]

    def to_json(self) -> str:
        return json.dumps({"kind": RECORD_KIND, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ChannelTableRecord:
        """Raises ValueError (with what is wrong) on anything but a record ``to_json`` wrote."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.pop("kind", None) != RECORD_KIND:
                raise ValueError(f"not a {RECORD_KIND} record")
            rows = tuple(ChannelRow(int(r["rank"]), int(r["channel"]), float(r["l2_norm"]), float(r["share"]),
                                    str(r["category"])) for r in data.pop("rows"))
            return cls(str(data["model_name"]), str(data["layer_name"]), int(data["filter_index"]),
                       int(data["top_k"]), int(data["n_channels"]), int(data["n_near_zero"]), str(data["rule"]),
                       rows)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed channel-table record ({type(exc).__name__}: {exc})") from None


def channel_table_record(table, model_name: str, top_k: int) -> ChannelTableRecord:
    """*table* (``channel_table``) as a ``ChannelTableRecord``."""
    total = float(table.attrs.get("total_sq_norm") or 0.0)
    rows = tuple(ChannelRow(int(r.rank), int(r.channel), float(r.l2_norm),
                            float(r.l2_norm) ** 2 / total if total > 0 else 0.0, str(r.category))
                 for r in table.itertuples())
    return ChannelTableRecord(model_name, str(table.attrs["layer"]), int(table.attrs["filter_index"]), int(top_k),
                              int(table.attrs["n_channels"]), int(table.attrs["n_near_zero"]),
                              str(table.attrs["rule"]), rows)


def write_record(record: ChannelTableRecord, folder=None) -> Path | None:
    """Write *record* to ``folder/RECORD_FILE`` (default: ``$LAB_RECORD_DIR``; nothing, None,
    where neither is set or the folder does not exist: a render creates it, and a variable
    left over from one must not break a notebook), atomically. A render's notebooks all
    write the same record."""
    folder = folder or os.environ.get(RECORD_DIR_ENV)
    if not folder or not Path(folder).is_dir():
        return None
    from .pages import write_text_atomic

    path = Path(folder) / RECORD_FILE
    write_text_atomic(path, record.to_json())
    return path


def format_channel_table(table) -> str:
    """Plain-text table for notebooks (stable, compared by nbval)."""
    cols = ["rank", "channel", "l2_norm", "n_positive", "n_negative", "weight_sum", "by_sign_count", "by_sum"]
    return table[cols].to_string(index=False, float_format=lambda v: f"{v:.5f}")


def category_counts(table) -> dict[str, int]:
    counts = table["category"].value_counts()
    return {k: int(counts.get(k, 0)) for k in ("excitatory", "inhibitory", "balanced")}


def circuit_paragraph(model_name: str, layer_name: str, filter_index: int, feeder: str,
                      table, top_classes=None, n_images: int | None = None) -> str:
    """A generated, factual summary of the circuit (numbers only; the student interprets)."""
    counts = category_counts(table)
    chans = ", ".join(f"{int(r.channel)} ({r.category}, L2 {r.l2_norm:.3f})" for r in table.itertuples())
    text = (
        f"Model {model_name.upper()}, layer {layer_name}, filter {filter_index} (0-based). "
        f"Its {table.attrs.get('n_channels', '?')} input channels come from {feeder} "
        f"(found from the model graph). The {len(table)} strongest single-channel filters by L2 norm are: {chans}. "
        f"By the {table.attrs.get('rule', CATEGORY_RULE)} rule, {counts['excitatory']} are excitatory, "
        f"{counts['inhibitory']} inhibitory and {counts['balanced']} balanced; "
        f"the two rules disagree on {int((~table['rules_agree']).sum())} of them."
    )
    if top_classes is not None and len(top_classes):
        classes = ", ".join(f"{r['class']} ({r['mean_activation']:.3g})" for _, r in top_classes.head(5).iterrows())
        text += (f" Over {n_images} probe images, the classes that excite the filter most "
                 f"(mean activation of its output map) are: {classes}.")
    return text
