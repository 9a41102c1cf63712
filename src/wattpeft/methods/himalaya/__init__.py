"""HIMALAYA (seed 003): a layer-free continual adapter. One dictionary of unit atoms, shared by
every adapted square layer (a fixed, seeded core and a trainable elastic pool), and one router
shared by all layers that, per token, gates a few atoms (at most `max_active_atoms` expected
active) and weighs them; the normalised mix r (||r|| = 1) adds r r^T / sqrt(d) to the frozen
weight. The elastic pool grows within a fixed atom count: when the inputs drift away from the
atoms, the top direction of recent residuals replaces the least-used elastic atom, whose
knowledge is first folded into the core's router weights (gradient-only Fisher, no replay).
The dictionary is stored at 3 bits, the router at 8.

config.py: `Config` (torch-free); layer.py: quantiser, dictionary and router (`Bank`), the
wrapped linear layer; model.py: `Method` (growth, consolidation, save/load/harden/export).
"""
