"""The flags segjax.train and segjax.preprocess share (segjax.cli)."""

import json
import subprocess
import sys

from e2e_helpers import cli_env
from e2e_helpers import REPO

# In a process of its own: segjax.segment and segjax.evaluate define some of
# the same flags, and absl refuses a flag defined twice in one process.
_JOB_SHARES = """
import json, sys
from absl import app, flags
from segjax import cli
shares = []
for argv in json.loads(sys.argv[1]):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["segjax.preprocess", *argv])
  try:
    shares.append(list(cli.job_share()))
  except app.UsageError as e:
    shares.append(str(e))
print(json.dumps(shares))
"""


def test_a_process_takes_its_share_from_job_flags_that_go_together():
  jobs = [
      [],
      ["--coordinator_address=127.0.0.1:1", "--num_processes=4"]
      + ["--process_id=3"],
      ["--num_processes=2", "--process_id=0"],
      ["--coordinator_address=h:1"],
      ["--coordinator_address=h:1", "--num_processes=2", "--process_id=2"],
  ]
  env = {k: v for k, v in cli_env().items() if k != "TPU_WORKER_HOSTNAMES"}
  result = subprocess.run(
      [sys.executable, "-c", _JOB_SHARES, json.dumps(jobs)],
      capture_output=True,
      text=True,
      cwd=REPO,
      env=env,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  together = (
      "--coordinator_address, --num_processes and --process_id go together"
  )
  assert json.loads(result.stdout) == [
      [0, 1],
      [3, 4],
      together,
      together,
      "--process_id=2 is not in [0, --num_processes=2)",
  ]
