"""The seeds' evaluation command, kept working: a thin wrapper over `trm eval`.

    python evaluators/run_arc_eval.py --checkpoint runs/arc2/checkpoints/step_N --output-dir runs/trm_arc2_eval \
        [--data data/built/arc2concept-aug-1000]
"""

import sys

from trm_core.evaluate import main_eval

if __name__ == "__main__":
    sys.exit(main_eval())
