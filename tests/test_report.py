"""The report: markdown table values and bold best, a real PNG, atomic writes."""

from instructrec_jax import report

TABLE = {
    "sequential": {
        "popularity": {"HR@1": 0.3234, "HR@3": 0.6363, "HR@5": 0.8059, "NDCG@3": 0.505, "NDCG@5": 0.5748, "num_examples": 943},
        "sasrec": {"HR@1": 0.6278, "HR@3": 0.8749, "HR@5": 0.9417, "NDCG@3": 0.7727, "NDCG@5": 0.8002,
                   "HR@1_std": 0.01, "num_examples": 943},
        "instructrec": {"HR@1": 0.40, "HR@3": 0.70, "HR@5": 0.85, "NDCG@3": 0.58, "NDCG@5": 0.64, "num_examples": 943},
    },
    "product_search": {"popularity": {"HR@1": 0.1, "HR@3": 0.3, "HR@5": 0.5, "NDCG@3": 0.2, "NDCG@5": 0.3, "num_examples": 135}},
}


def test_markdown_table_rows_values_and_best_in_bold():
    text = report.markdown_table(TABLE)
    lines = text.strip().splitlines()
    assert lines[0].startswith("| scenario | method | HR@1 | HR@3 | HR@5 | NDCG@3 | NDCG@5 |")
    assert len(lines) == 2 + 4
    sasrec = next(line for line in lines if "SASRec" in line)
    assert "**0.6278 ± 0.0100**" in sasrec and "**0.8002**" in sasrec and sasrec.endswith("| 943 |")
    pop = next(line for line in lines if "Popularity" in line and "sequential" in line)
    assert "| 0.3234 |" in pop and "**" not in pop
    # methods in a fixed order: baselines first, the LLM last
    seq = [line for line in lines if "sequential" in line]
    assert ["Popularity" in seq[0], "SASRec" in seq[1], "InstructRec" in seq[2]] == [True, True, True]
    # a scenario with one method has nothing to compare: no bold
    search = next(line for line in lines if "product search" in line)
    assert "**" not in search


def test_report_and_plot_files(tmp_path):
    md = report.write_markdown(TABLE, tmp_path / "r.md", title="ml-100k test", notes=["ties: pessimistic"])
    assert md.read_text(encoding="utf-8").startswith("# ml-100k test\n")
    assert "- ties: pessimistic" in md.read_text(encoding="utf-8")
    png = report.write_plot(TABLE, tmp_path / "r.png", title="ml-100k")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # nothing but the two outputs: no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.md", "r.png"]
