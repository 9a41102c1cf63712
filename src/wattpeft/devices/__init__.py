"""Device profile tables for the hardware-surrogate family: measured, imported and simulated
rows of (energy, latency, peak power) per configuration s and device.

    from wattpeft.devices import read_imported_csv, simulate, SIMULATED_DEVICES, ModelShape

See docs/devices.md for the table's columns, the three sources and the roofline model
(whose rows are modelled, not measured, and labelled `simulated` wherever they appear).
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

# Imported lazily (PEP 562), as wattpeft.energy: a job takes only the submodules it uses.
_EXPORTS = {
    "table": ("COLUMNS", "CONFIG_COLUMNS", "DeviceTableError", "IMPORTED", "MEASURED", "METRIC_COLUMNS",
              "PARAM_BITS", "SIMULATED", "SOURCES", "UNAVAILABLE", "read_imported_csv", "read_table",
              "validate_table", "write_table"),
    "roofline": ("DeviceSpec", "ModelShape", "NOISE_SIGMAS", "SIMULATED_DEVICES", "Workload", "bound",
                 "predict", "simulate", "workload"),
    "grid": ("GridError", "configuration_grid"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
