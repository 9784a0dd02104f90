"""The evaluation report: a markdown table (scenario × method, the paper's metrics) and a bar plot.

Input is `table[scenario][method] -> {"HR@1": ..., "NDCG@5": ..., "num_examples": ...}` (see
`evaluate.reported_test_metrics`). Both outputs are written atomically (the plot is rendered to a
temporary file next to its final name, then renamed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from instructrec_jax.atomic import atomic_file, write_text_atomic

REPORT_METRICS = ("HR@1", "HR@3", "HR@5", "NDCG@3", "NDCG@5")
SCENARIO_LABELS = {
    "sequential": "sequential ⟨P1,I0,T3⟩",
    "product_search": "product search ⟨P0,I2,T3⟩",
    "personalized_p2": "personalised ⟨P1,P2,T3⟩",
    "personalized_i1": "personalised ⟨P1,I1,T3⟩",
    "personalized_i2": "personalised ⟨P1,I2,T3⟩",
}
METHOD_LABELS = {"instructrec": "InstructRec", "popularity": "Popularity", "itemknn": "Item-kNN", "sasrec": "SASRec"}
METHOD_ORDER = ("popularity", "itemknn", "sasrec", "instructrec")

Table = Mapping[str, Mapping[str, Mapping[str, float]]]


def _methods(table: Table) -> list[str]:
    seen = {m for row in table.values() for m in row}
    return [m for m in METHOD_ORDER if m in seen] + sorted(seen - set(METHOD_ORDER))


def markdown_table(table: Table, metrics: Sequence[str] = REPORT_METRICS) -> str:
    """One row per (scenario, method); the best value of each metric within a scenario in bold."""
    lines = ["| scenario | method | " + " | ".join(metrics) + " | examples |",
             "|---|---|" + "---:|" * len(metrics) + "---:|"]
    for scenario, row in table.items():
        best = {m: max((v.get(m, float("-inf")) for v in row.values()), default=None) for m in metrics}
        for method in _methods({scenario: row}):
            values = row[method]
            cells = []
            for m in metrics:
                if m not in values:
                    cells.append("–")
                    continue
                text = f"{values[m]:.4f}"
                if f"{m}_std" in values:
                    text += f" ± {values[f'{m}_std']:.4f}"
                cells.append(f"**{text}**" if values[m] == best[m] and len(row) > 1 else text)
            examples = values.get("num_examples", "")
            lines.append(f"| {SCENARIO_LABELS.get(scenario, scenario)} | {METHOD_LABELS.get(method, method)} | "
                         + " | ".join(cells) + f" | {examples} |")
    return "\n".join(lines) + "\n"


def markdown_report(table: Table, *, title: str, notes: Sequence[str] = ()) -> str:
    """The table under a heading, with the notes that say how the numbers were computed."""
    parts = [f"# {title}", "", markdown_table(table)]
    parts.extend(f"- {note}" for note in notes)
    return "\n".join(parts) + "\n"


def write_markdown(table: Table, path: str | os.PathLike, *, title: str, notes: Sequence[str] = ()) -> Path:
    write_text_atomic(path, markdown_report(table, title=title, notes=notes))
    return Path(path)


def write_plot(table: Table, path: str | os.PathLike, *, title: str = "",
               metrics: Sequence[str] = ("HR@1", "NDCG@5")) -> Path:
    """Grouped bars: one panel per metric, scenarios along x, one bar per method (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(table)
    methods = _methods(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, metric in zip(axes[0], metrics):
        for k, method in enumerate(methods):
            xs = [i + (k - (len(methods) - 1) / 2) * width for i in range(len(scenarios))]
            ys = [table[s].get(method, {}).get(metric, 0.0) for s in scenarios]
            ax.bar(xs, ys, width, label=METHOD_LABELS.get(method, method))
        ax.set_xticks(range(len(scenarios)))
        # The instruction type in plain brackets (the plot font may lack ⟨⟩): three scenarios are "personalised".
        ax.set_xticklabels([SCENARIO_LABELS.get(s, s).replace(" ⟨", "\n(").replace("⟩", ")") for s in scenarios],
                           rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path
