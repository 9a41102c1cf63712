"""Cross-run aggregation, statistics and figures for the comparison report."""

from wattpeft.report.aggregate import (
    AGGREGATE_NAME,
    SCHEMA_VERSION,
    MetricsFileError,
    aggregate,
    aggregate_family,
    combine_families,
    family_file_object,
    metric_direction,
    percent_gap,
    write_aggregate,
)
from wattpeft.report.figures import FIGURES, figure_names, make_figure, plot_learning_curve
from wattpeft.report.stats import seed_stats, welch_test

__all__ = [
    "AGGREGATE_NAME",
    "FIGURES",
    "SCHEMA_VERSION",
    "MetricsFileError",
    "aggregate",
    "aggregate_family",
    "combine_families",
    "family_file_object",
    "figure_names",
    "make_figure",
    "metric_direction",
    "percent_gap",
    "plot_learning_curve",
    "seed_stats",
    "welch_test",
    "write_aggregate",
]
