"""The flags segjax.train and segjax.preprocess share (segjax.cli)."""

from absl import app
from absl import flags
from absl.testing import flagsaver
import pytest

from segjax import cli


@pytest.fixture(name="parsed_flags")
def _parsed_flags(monkeypatch):
  monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver():
    yield


@pytest.mark.usefixtures("parsed_flags")
def test_a_process_takes_its_share_from_the_job_flags():
  assert cli.job_share() == (0, 1)
  with flagsaver.flagsaver(
      coordinator_address="127.0.0.1:1", num_processes=4, process_id=3
  ):
    assert cli.job_share() == (3, 4)


@pytest.mark.usefixtures("parsed_flags")
@pytest.mark.parametrize(
    "job, message",
    [
        (dict(num_processes=2, process_id=0), "go together"),
        (dict(coordinator_address="h:1"), "go together"),
        (
            dict(coordinator_address="h:1", num_processes=2, process_id=2),
            r"--process_id=2 is not in \[0, --num_processes=2\)",
        ),
    ],
)
def test_job_flags_go_together_and_name_a_process_of_the_job(job, message):
  with flagsaver.flagsaver(**job):
    with pytest.raises(app.UsageError, match=message):
      cli.job_share()
