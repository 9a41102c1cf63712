"""TABS (seeds 000/001 baseline): token-wise adaptive basis selection. A per-layer controller
(a linear map from the token's input to R gate logits: O(L x R x d) parameters) gates each
spectral direction per token, 2-way {off, fp16}; a per-example FLOP cap is enforced by a
penalty (methods/spectral_method.py, FlopCapCost). Hardened by argmax per token, no cap at
inference. Its modelled energy per sample on the validation split is HEST's reference.

config.py: `Config` (torch-free); model.py: `Method`.
"""
