"""Blinded reader studies of adversarial images (issue 29).

``make`` builds a study folder of de-identified, header-normalised DICOM cases (originals and
adversarial images, alone or in pairs) and a separate key; readers answer in the app or in a
CSV; ``score`` unblinds with the key. Nothing in the study folder tells an original from an
adversarial image except the pixels (:mod:`p2p_desktop.readerstudy.blind` checks it).
"""

from p2p_desktop.readerstudy.answers import (
    FINDINGS,
    Answer,
    load_answers,
    parse_answers_csv,
    save_answers,
)
from p2p_desktop.readerstudy.blind import check_blinded, check_study_folder
from p2p_desktop.readerstudy.make import Source, collect_sources, load_study, make_study
from p2p_desktop.readerstudy.score import load_key, score_study

__all__ = ["FINDINGS", "Answer", "load_answers", "parse_answers_csv", "save_answers", "check_blinded",
           "check_study_folder", "Source", "collect_sources", "load_study", "make_study", "load_key",
           "score_study"]
