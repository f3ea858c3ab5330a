"""Plots of the LPA studies: per-layer fit difficulty (the diagnostic sweep)."""

from pathlib import Path

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
