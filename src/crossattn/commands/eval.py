"""``crossattn eval``: prompt adherence and attention grounding of a model → ``DIR/report.json``.

Every output path is checked before anything is generated, so a refusal to overwrite loses no work.
"""

from __future__ import annotations

import argparse

from ..errors import BadArgument
from .flags import (
    add_device_flags,
    add_lora_flag,
    add_model_flag,
    add_out_flag,
    add_overwrite_flag,
    add_relation_guidance_flag,
    add_sampler_flags,
    add_seed_flag,
    positive_int,
)

OUTPUTS = ("report.json", "failures.png")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="measure prompt adherence and attention grounding",
        description="Generate a balanced, seeded prompt set, analyse the images, write DIR/report.json.",
    )
    add_model_flag(p)
    add_lora_flag(p)
    add_relation_guidance_flag(p)
    p.add_argument(
        "--n", type=positive_int, default=300, help="number of prompts, one image each (default: %(default)s)"
    )
    p.add_argument(
        "--counting",
        type=int,
        default=None,
        metavar="N",
        help="counting prompts ('two red circles [and a blue square]') after the --n prompts "
        "(default: a third of --n; 0: none)",
    )
    add_seed_flag(p, "seed of the prompt set and noise (default: %(default)s)")
    add_sampler_flags(p)
    p.add_argument(
        "--tau", type=float, default=0.4, help="grounding threshold on the [0, 1] word map (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="images generated together (default: %(default)s)",
    )
    p.add_argument("--no-grounding", action="store_true", help="skip attention capture and grounding IoU")
    add_out_flag(p, default="outputs/eval")
    add_overwrite_flag(p, "replace an existing report.json / failures.png")
    add_device_flags(p, quiet=False, dtype=False)
    return p


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
        raise BadArgument(f"--tau {args.tau} is not accepted; give a number in (0, 1]")
    if args.counting is not None and args.counting < 0:
        raise BadArgument(f"--counting {args.counting} is not accepted; give a number of prompts >= 0")
    model = model_from_args(args)
    refuse_overwrite([request.out / name for name in OUTPUTS], request.overwrite)

    settings = EvalSettings(
        n=args.n,
        sampling=request.config,
        tau=args.tau,
        batch_size=request.batch_size,
        grounding=not args.no_grounding,
        counting=args.counting,
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
