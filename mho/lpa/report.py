"""Plots and tables of the LPA studies: per-layer fit difficulty (the diagnostic sweep),
WER against replaced layers (the conversion)."""

from pathlib import Path

from mho.errors import MhoError
from mho.lpa.diagnostic import LayerFit


def plot_sweep(fits: list[LayerFit], path: Path, *, title: str) -> None:
    """Bars of relative MSE per layer (hard gates; soft as ticks), easiest marked by rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = {f.layer: r for r, f in enumerate(sorted(fits, key=lambda f: (f.mse, f.layer)), 1)}
    figure, axes = plt.subplots(figsize=(7, 3.5))
    layers = [f.layer for f in fits]
    axes.bar(layers, [f.mse for f in fits], color="tab:blue", label="hard gates (inference)")
    axes.scatter(layers, [f.soft_mse for f in fits], color="black", marker="_", s=200,
                 label="soft gates (training)", zorder=3)
    for fit in fits:
        axes.annotate(f"#{ranks[fit.layer]}", (fit.layer, fit.mse), ha="center",
                      va="bottom", fontsize=8)
    axes.set_xlabel("layer")
    axes.set_ylabel("relative MSE vs attention output")
    axes.set_xticks(layers)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def conversion_rows(cards: list[dict]) -> list[dict]:
    """One row per model card of an LPA host (wav2vec2 family or Conformer): its conversion
    order (the card's ``lpa_order_kind`` if set, else "naive" when the replaced layers are
    0..k-1 in that order, "mse" otherwise; the
    teacher, with none replaced, starts both), depth and WER per (set, decoder), only for the
    (set, decoder) pairs every card was scored on. A Conformer card packed before LPAs
    existed (no LPA keys; its architecture has num_blocks) is a teacher."""
    rows = []
    for card in cards:
        order = card.get("lpa_order", card.get("lpa_layers"))
        if order is None and "num_blocks" in card.get("architecture", {}):
            order = []
        if order is None:
            raise MhoError(f"{card['name']} is not the card of an LPA host model")
        wer = {f"{r['data']} {r['decoder']}": r["wer"] for r in card.get("results", [])}
        recorded = card.get("lpa_order_kind")  # `mho lpa convert --order`, when it was used
        if not order:  # the teacher starts both orders
            kinds = ["mse", "naive"]
        elif recorded in ("mse", "naive"):
            kinds = [recorded]
        else:
            kinds = ["naive" if order == list(range(len(order))) else "mse"]
        rows += [{"name": card["name"], "order": kind, "depth": len(order), "layers": order,
                  "wer": wer} for kind in kinds]
    shared = set.intersection(*(set(row["wer"]) for row in rows)) if rows else set()
    for row in rows:
        row["wer"] = {key: value for key, value in row["wer"].items() if key in shared}
    return sorted(rows, key=lambda r: (r["order"], r["depth"]))


def conversion_markdown(rows: list[dict]) -> str:
    """`conversion_rows` as a markdown table: order, depth, layers, WER per (set, decoder)."""
    panels = sorted({key for row in rows for key in row["wer"]})
    lines = ["| order | replaced | layers | " + " | ".join(panels) + " |",
             "|" + " --- |" * (3 + len(panels))]
    for row in rows:
        lines.append(f"| {row['order']} | {row['depth']} | {', '.join(map(str, row['layers']))}"
                     f" | " + " | ".join(f"{row['wer'].get(p, float('nan')):.2f}"
                                         for p in panels) + " |")
    return "\n".join(lines) + "\n"


def plot_conversion(rows: list[dict], path: Path, *, num_layers: int) -> None:
    """WER vs replaced layers, one panel per test set and decoder, MSE-ranked vs naive
    order (the paper's Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({key for row in rows for key in row["wer"]})
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2),
                                squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for order, style in (("mse", "o-"), ("naive", "s--")):
            points = [(r["depth"], r["wer"][panel]) for r in rows
                      if r["order"] == order and panel in r["wer"]]
            axis.plot(*zip(*points, strict=True), style,
                      label="MSE-ranked" if order == "mse" else "naive (first to last)")
        axis.set(title=panel, xlabel=f"layers replaced (of {num_layers})", ylabel="WER %")
        axis.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
