"""The fuzz tests share their strategies through ``fuzz_tables`` beside them (the importlib
import mode does not put test folders on ``sys.path``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
