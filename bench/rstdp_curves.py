"""Figure of the R-STDP recipe experiments: validation accuracy per epoch for the decision rates
tried (bench/rstdp-data/rstdp-rates-*.csv: epoch,val_accuracy) and whole runs (run folders or
history.csv files on the command line, labelled by their names: `recipe-*` SpykeTorch's R-STDP,
`teacher-tX-*` with `--set decision.teacher=X`). Writes bench/rstdp_curves.png:

    python bench/rstdp_curves.py bench/rstdp-data/recipe-s*-history.csv bench/rstdp-data/teacher-*-history.csv
"""
import csv
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LABELS = {"base": "paper rates", "x2": "2x paper rates (the recipe's)", "x4": "4x paper rates",
          "min02": "paper rates, adaptive_min 0.2, adaptive_int 0.8"}


def read(path, stage=None):
    with open(path) as handle:
        rows = [r for r in csv.DictReader(handle) if (stage is None or r.get("stage") == stage)
                and r.get("val_accuracy")]
    return [int(r["epoch"]) for r in rows], [100 * float(r["val_accuracy"]) for r in rows]


def main(runs):
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for key, label in LABELS.items():
        path = os.path.join(HERE, "rstdp-data", f"rstdp-rates-{key}.csv")
        if os.path.exists(path):
            axis.plot(*read(path), label=f"{label} (one conv1/conv2)", linewidth=1.2)
    for run in runs:        # run folders or their history.csv files
        path = run if run.endswith(".csv") else os.path.join(run, "history.csv")
        name = os.path.basename(run.rstrip("/")).replace("-history.csv", "")
        style = "-" if name.startswith("teacher") else "--"
        label = name if name.startswith("teacher") else f"{name} (plain R-STDP)"
        axis.plot(*read(path, "decision"), style, linewidth=1.4, label=label)
    axis.set_xlabel("R-STDP epoch (54,000 MNIST images)")
    axis.set_ylabel("validation accuracy (%)")
    axis.set_ylim(82, 97)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title("mozafari2018 decision layer, exact R-STDP, batch 32")
    figure.tight_layout()
    figure.savefig(os.path.join(HERE, "rstdp_curves.png"), dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
