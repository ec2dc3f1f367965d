"""Performance benchmarks: `python -m benchmarks` runs them all; each module also runs alone.

The machines are small and noisy (2 shared cores), so every benchmark measures AgentFlow and
its baseline side by side in the same process, alternating, and reports medians and ratios.
"""

import os

# LiteLLM downloads its price map at import unless told not to (the machines are offline).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
