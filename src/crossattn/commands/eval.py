"""``crossattn eval``: prompt adherence and attention grounding of a model → ``DIR/report.json``.

Every output path is checked before anything is generated, so a refusal to overwrite loses no work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUTPUTS = ("report.json", "failures.png")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.clip_judge import judge_results
    from ..evaluation.grounding import load_trace
    from ..evaluation.report import build_report, format_table, write_outputs
    from ..evaluation.run import EvalSettings, run_evaluation
    from ..files import refuse_overwrite
    from ..loading import check_lora_folder, check_model_folder, load_pipeline, model_identity
    from .shared import check_scheduler, scheduler_name, set_threads

    check_scheduler(args.scheduler)
    if not 0.0 < args.tau <= 1.0:
        raise ValueError(f"--tau must be in (0, 1], got {args.tau}")
    if args.model is not None:
        check_model_folder(args.model)
    if args.lora is not None:
        check_lora_folder(args.lora)
    out = Path(args.out)
    refuse_overwrite([out / name for name in OUTPUTS], args.overwrite)

    settings = EvalSettings(
        n=args.n,
        seed=args.seed,
        steps=args.steps,
        guidance_scale=args.guidance,
        relation_guidance=args.relation_guidance,
        scheduler=args.scheduler,
        tau=args.tau,
        batch_size=args.batch_size,
        grounding=not args.no_grounding,
    )
    set_threads(args.threads)
    trace, reason = load_trace() if settings.grounding else (None, "switched off with --no-grounding")
    pipe = load_pipeline(args.model, scheduler=args.scheduler, device=args.device, lora=args.lora)
    pipe.set_progress_bar_config(disable=True)
    results, seconds = run_evaluation(pipe, settings, trace, progress=_progress)
    clip = judge_results(results, getattr(args, "clip", None), settings.seed)
    report = build_report(
        results, settings, model_identity(args.model, args.lora), scheduler_name(pipe), seconds, reason, clip
    )
    (out / "failures.png").unlink(missing_ok=True)  # a stale sheet must not outlive its run (--overwrite)
    for path in write_outputs(out, report, results):
        print(path)
    print(format_table(report))
    return 0


def _progress(batches):
    from tqdm.auto import tqdm

    return tqdm(batches, desc="eval", unit="batch", leave=False)
