"""`python app.py`: the whole AgentFlow app — web UI, REST API and run executor — in one process.

Listens on AGENTFLOW_HOST:AGENTFLOW_PORT (default 127.0.0.1:7860). Bound to
anything but loopback it needs AGENTFLOW_PASSWORD; see agentflow/web/auth.py.
"""

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from agentflow.web.main import main

if __name__ == "__main__":
    sys.exit(main())
