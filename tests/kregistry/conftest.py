import sys
from pathlib import Path

# Spawned children get the parent's sys.path, so they can import the helpers too.
sys.path.insert(0, str(Path(__file__).parent))
