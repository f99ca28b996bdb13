"""calendar_pipeline: daily calendar snapshots, a JSONL index and Slack alerts, on Dagster.

The pure packages (``sources``, ``lake``, ``alerts``, ``universe``, ``settings``) never
import Dagster; ``defs`` wires them into assets, checks, jobs, sensors and schedules, and
``definitions`` holds the one ``Definitions`` object.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calendar_pipeline")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"
