"""The performance suite (``run.py`` runs it). Its scripts import one another by bare name, as scripts
run from this folder do; a study that imports one as ``perf.<name>`` gets this folder on the path for
those same imports (the one path change in the benchmarks besides ``stability/``'s own)."""

import sys
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))
