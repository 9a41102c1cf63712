"""Cross-run aggregation, statistics and figures for the comparison report.

Names are imported lazily (PEP 562): the Snakefile reads `report.kinds` while parsing,
which must not import matplotlib."""

from __future__ import annotations

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "aggregate": ("AGGREGATE_NAME", "SCHEMA_VERSION", "MetricsFileError", "aggregate", "aggregate_family",
                  "combine_families", "family_file_object", "metric_direction", "percent_gap", "write_aggregate"),
    "figures": ("FIGURES", "figure_names", "make_figure", "plot_learning_curve"),
    "stats": ("seed_stats", "welch_test"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
