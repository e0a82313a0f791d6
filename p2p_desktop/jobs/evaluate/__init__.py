"""Batch evaluation: every attack × every classifier over a BUSI-layout dataset, as in the P2P paper.

The steps are in :mod:`.loop` (numbered there); the settings in :mod:`.params`, the per-image
table and resume state in :mod:`.log`, the summary tables in :mod:`.summary`, FID in :mod:`.fid`,
the folder's file names in :mod:`.files` and the audit record in :mod:`.audit`.
"""

from p2p_desktop.jobs.evaluate.audit import record_evaluation
from p2p_desktop.jobs.evaluate.files import (
    ADVERSARIAL_DIR,
    PER_IMAGE_FILE,
    STATE_FILE,
    SUMMARY_FILES,
    adversarial_path,
)
from p2p_desktop.jobs.evaluate.log import PER_IMAGE_COLUMNS, read_rows
from p2p_desktop.jobs.evaluate.loop import EvaluationResult, ProgressCallback, evaluate
from p2p_desktop.jobs.evaluate.params import build_attacks, select_items
from p2p_desktop.jobs.evaluate.summary import COLUMN_HELP, SUMMARY_COLUMNS, summarise, summary_markdown

__all__ = [
    "PER_IMAGE_COLUMNS",
    "SUMMARY_COLUMNS",
    "COLUMN_HELP",
    "PER_IMAGE_FILE",
    "STATE_FILE",
    "SUMMARY_FILES",
    "ADVERSARIAL_DIR",
    "ProgressCallback",
    "EvaluationResult",
    "evaluate",
    "build_attacks",
    "select_items",
    "read_rows",
    "summarise",
    "summary_markdown",
    "adversarial_path",
    "record_evaluation",
]
