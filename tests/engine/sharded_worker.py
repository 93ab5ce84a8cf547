"""A ``polysemy`` entry point for torchrun in the tests: registers the test-only model and
dataset (tests.fakes) and runs ``benchmark.cli.main``. ``POLYSEMY_TEST_KILL_RANK=r`` makes
rank r kill itself (SIGKILL) when its shard of a capture starts: a rank that dies mid-run."""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tests.fakes  # noqa: E402,F401  (registers tiny_test_net and tiny_test_images)
from benchmark.cli import main  # noqa: E402
from benchmark.engine import capture as capture_module  # noqa: E402

if "POLYSEMY_TEST_KILL_RANK" in os.environ:
    original = capture_module.capture_partial

    def dying(*args, **kwargs):
        if os.environ.get("RANK") == os.environ["POLYSEMY_TEST_KILL_RANK"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    capture_module.capture_partial = dying

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
