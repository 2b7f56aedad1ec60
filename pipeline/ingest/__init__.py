"""Stage 1, ingestion: ROS 2 bags from a fleet → a Minari dataset with RL semantics."""

from pipeline.ingest.bag import IngestError
from pipeline.ingest.config import IngestConfig
from pipeline.ingest.dataset import REPORT_JSON, REPORT_MD, datasets_root, find_bags, ingest
from pipeline.ingest.report import QualityReport

__all__ = [
    "REPORT_JSON",
    "REPORT_MD",
    "IngestConfig",
    "IngestError",
    "QualityReport",
    "datasets_root",
    "find_bags",
    "ingest",
]
