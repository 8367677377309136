"""``crossattn eval``: prompt adherence and attention grounding of a model → ``DIR/report.json``.

Every output path is checked before anything is generated, so a refusal to overwrite loses no work.
"""

from __future__ import annotations

import argparse

OUTPUTS = ("report.json", "failures.png")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.clip_judge import judge_results
    from ..evaluation.grounding import load_trace
    from ..evaluation.report import build_report, format_table, write_outputs
    from ..evaluation.run import EvalSettings, run_evaluation
    from ..files import refuse_overwrite
    from ..sampling import scheduler_name
    from .shared import model_from_args, request_from_args, set_threads

    request = request_from_args(args, [])  # the prompts are the evaluation's own set
    if not 0.0 < args.tau <= 1.0:
        raise ValueError(f"--tau must be in (0, 1], got {args.tau}")
    model = model_from_args(args)
    refuse_overwrite([request.out / name for name in OUTPUTS], request.overwrite)

    settings = EvalSettings(
        n=args.n, sampling=request.config, tau=args.tau, batch_size=request.batch_size, grounding=not args.no_grounding
    )
    set_threads(args.threads)
    trace, reason = load_trace() if settings.grounding else (None, "switched off with --no-grounding")
    pipe = model.load(request.scheduler, request.device)
    pipe.set_progress_bar_config(disable=True)
    results, seconds = run_evaluation(pipe, settings, trace, progress=_progress)
    clip = judge_results(results, getattr(args, "clip", None), settings.sampling.seed)
    report = build_report(results, settings, model.identity(), scheduler_name(pipe), seconds, reason, clip)
    (request.out / "failures.png").unlink(missing_ok=True)  # a stale sheet must not outlive its run (--overwrite)
    for path in write_outputs(request.out, report, results):
        print(path)
    print(format_table(report))
    return 0


def _progress(batches):
    from tqdm.auto import tqdm

    return tqdm(batches, desc="eval", unit="batch", leave=False)
