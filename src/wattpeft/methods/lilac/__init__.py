"""LILAC: dictionary atoms shared by all adapted layers, per-layer rank-r coefficients, online
EWC over a task stream, 8-bit storage.

Per distinct feature width w of the target modules' inputs and outputs, one dictionary D_w
(`atoms` x w), shared by every module of that width. Module m owns coefficients C_m and E_m
(rank x atoms): A_m = C_m D_in (rank x in), B_m = (E_m D_out)^T (out x rank), and adds
scaling x B_m A_m dropout(x) to its frozen `base_layer(x)` (scaling = alpha / rank, alpha
default 2 x rank). Dictionaries start random (rows of unit norm), C small, E zero: the update
starts at 0. Dictionaries and coefficients train; EWC consolidates them as LoRA-EWC does
(methods/ewc.py, `EwcStream`). Its size is its config's (atoms, rank), not the budget rule's.
Stored (`save`) as int8 with one scale per row; the model is rounded to those values when it
is stored (and at each task's end), so what is measured is what is stored.

config.py: `Config` (torch-free); layer.py: the layers and the 8-bit round trip;
model.py: `Method`.
"""
