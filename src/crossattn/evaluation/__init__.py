"""Evaluation: does the model draw what the caption says, and does each word's attention land on
its object? (Issue 6.) ``analyze`` finds objects, ``check_caption`` judges a caption, ``map_iou``
measures grounding, ``run_evaluation`` does a whole seeded run, ``ClipJudge`` scores images against
captions with the mini-CLIP (CLIP score, hard-negative preference) where the analyzer cannot.

May import: ``crossattn.config``, ``crossattn.files``, ``crossattn.data``, ``crossattn.attention`` and
``crossattn.models``; never training, sampling, commands or web (``tests/test_import_graph.py``)."""

from .analyzer import DetectedObject, analyze
from .checks import CaptionCheck, check_caption, score_single_object
from .clip_judge import ClipJudge, clip_table, hard_negative_accuracy, judge_results
from .grounding import TAU, map_iou, normalise_map
from .run import EvalSettings, eval_prompts, run_evaluation

__all__ = [
    "DetectedObject",
    "analyze",
    "CaptionCheck",
    "check_caption",
    "score_single_object",
    "ClipJudge",
    "clip_table",
    "hard_negative_accuracy",
    "judge_results",
    "TAU",
    "map_iou",
    "normalise_map",
    "EvalSettings",
    "eval_prompts",
    "run_evaluation",
]
