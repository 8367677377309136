"""The evaluation run: a balanced seeded prompt set → generate → analyse → report.

Prompt set for ``n`` prompts and ``seed``: half one-object (a third plain, two thirds with a
position, the five positions in turn), half two-object (the five relations in turn); colours and
shapes drawn from ``default_rng([seed, EVAL_STREAM])``, a stream no training code uses. Image
``i`` starts from the noise of ``torch.Generator().manual_seed(IMAGE_SEED_BASE + 10_000 * seed + i)``,
far from the small seeds training-time sample grids use.

Counting prompts (issue 40) follow the ``n`` prompts, so the first ``n`` are the same set with or
without them: ``counting`` of them (default a third of ``n``), alternately "NUMBER COLOUR SHAPEs" and
"NUMBER COLOUR SHAPEs and a COLOUR SHAPE", the numbers in turn, colours and shapes from a stream of
their own (``[seed, EVAL_STREAM, 1]``); image ``n + j`` continues the noise seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np

from ..config import SamplingConfig
from ..data.captions import COLOURS, NUMBERS, POSITIONS, RELATIONS, format_caption
from ..data.shapes import SHAPES
from .checks import CaptionCheck, check_caption
from .grounding import TAU, attention_word_map, ground_words

EVAL_STREAM = 0xE7A1
IMAGE_SEED_BASE = 1_000_000
GROUPS = {"one": "one", "one_position": "one", "two_relation": "two", "two_and": "two", "count": "count"}
GROUPS["count_and"] = "count"


@dataclass
class EvalPrompt:
    caption: str
    kind: str
    seed: int  # the image's noise seed


@dataclass
class EvalSettings:
    """An evaluation run: ``n`` prompts sampled with ``sampling`` (its seed also picks the prompt set and
    the noises), ``batch_size`` at a time, judged at grounding threshold ``tau``. ``counting`` counting
    prompts follow the ``n`` (None: a third of ``n``; 0: none)."""

    n: int = 300
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tau: float = TAU
    batch_size: int = 16
    grounding: bool = True
    analyzer_shapes: tuple[str, ...] = SHAPES  # e.g. ALL_SHAPES: judge a fine-tuned model that may draw rings
    counting: int | None = None

    def counting_prompts(self) -> int:
        """How many counting prompts follow the ``n`` (``counting``, or a third of ``n`` when None)."""
        return self.n // 3 if self.counting is None else self.counting

    def to_dict(self) -> dict:
        """The report's ``settings``: the sampler settings beside the evaluation's own, one flat dict."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sampling"}
        sampler = self.sampling.to_dict()
        own["counting"] = self.counting_prompts()
        return {"n": own.pop("n"), "seed": sampler.pop("seed"), **sampler, **own}


@dataclass
class SampleResult:
    prompt: EvalPrompt
    image: np.ndarray  # (H, W, 3) uint8
    check: CaptionCheck
    words: list[dict] = field(default_factory=list)  # grounding records (see grounding.ground_words)

    def to_dict(self) -> dict:
        return {"seed": self.prompt.seed, **self.check.to_dict(), "grounding": self.words}


def eval_prompts(n: int, seed: int = 0, shapes: tuple[str, ...] = SHAPES, counting: int = 0) -> list[EvalPrompt]:
    """The balanced, seeded prompt set, then ``counting`` counting prompts (see the module docstring)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if counting < 0:
        raise ValueError(f"counting must be >= 0 prompts, got {counting}")
    rng = np.random.default_rng([seed, EVAL_STREAM])
    n_one = n // 2
    n_plain = n_one - round(n_one * 2 / 3)

    def obj() -> tuple[str, str]:
        return str(rng.choice(list(COLOURS))), str(rng.choice(shapes))

    prompts = []
    for i in range(n):
        if i < n_plain:
            caption, kind = format_caption([obj()]), "one"
        elif i < n_one:
            caption, kind = format_caption([obj()], position=POSITIONS[(i - n_plain) % 5]), "one_position"
        else:
            first, second = obj(), obj()
            while second == first:
                second = obj()
            relation = RELATIONS[(i - n_one) % 5]
            caption, kind = (
                format_caption([first, second], relation=relation),
                "two_and" if relation == "and" else "two_relation",
            )
        prompts.append(EvalPrompt(caption, kind, IMAGE_SEED_BASE + 10_000 * seed + i))
    return prompts + counting_prompts(counting, seed, shapes, first_index=n)


def counting_prompts(count: int, seed: int, shapes: tuple[str, ...], first_index: int) -> list[EvalPrompt]:
    """``count`` counting prompts, alternately a group alone and a group beside one object (module docstring)."""
    rng = np.random.default_rng([seed, EVAL_STREAM, 1])
    numbers = list(NUMBERS.values())

    def obj() -> tuple[str, str]:
        return str(rng.choice(list(COLOURS))), str(rng.choice(shapes))

    prompts = []
    for j in range(count):
        objects = [obj()]
        if j % 2:
            while len(objects) < 2 or objects[1] == objects[0]:
                objects[1:] = [obj()]
        caption = format_caption(objects, relation="and" if j % 2 else None, count=numbers[(j // 2) % len(numbers)])
        kind = "count_and" if j % 2 else "count"
        prompts.append(EvalPrompt(caption, kind, IMAGE_SEED_BASE + 10_000 * seed + first_index + j))
    return prompts


def generate(pipe, prompts: list[EvalPrompt], settings: EvalSettings, trace=None):
    """Images ((B, H, W, 3) uint8) for one batch of prompts, and the attention maps when ``trace``."""
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(p.seed) for p in prompts]
    kwargs = {**settings.sampling.pipeline_kwargs(), "generator": generators, "output_type": "np"}
    captions = [p.caption for p in prompts]
    maps = None
    if trace is None:
        images = pipe(captions, **kwargs).images
    else:
        with trace(pipe) as tracer:
            images = pipe(captions, **kwargs).images
        maps = tracer.maps()
    return (np.asarray(images) * 255).round().astype(np.uint8), maps  # (B, H, W, 3)


def evaluate_batch(pipe, prompts: list[EvalPrompt], settings: EvalSettings, resolution: int, trace=None):
    """Generate, analyse and (with ``trace``) ground one batch → list of :class:`SampleResult`."""
    images, maps = generate(pipe, prompts, settings, trace)
    results = []
    for i, (prompt, image) in enumerate(zip(prompts, images, strict=True)):
        check = check_caption(image, prompt.caption, resolution, settings.analyzer_shapes)
        words = (
            ground_words(check, attention_word_map(maps, prompt.caption, i), settings.tau) if maps is not None else []
        )
        results.append(SampleResult(prompt, image, check, words))
    return results


def accuracy_table(results: list[SampleResult]) -> dict[str, dict]:
    """``{"one.colour": {"accuracy", "correct", "n"}, ..., "all": ..., "exact": ...}`` plus per-position,
    per-relation and per-number breakdowns (``"one.position[top left]"``, ``"two.relation[above]"``,
    ``"count.counting[two]"``); ``exact`` over every prompt (nothing drawn but what it names)."""
    tally: dict[str, list[int]] = {}

    def add(key: str, ok: bool) -> None:
        tally.setdefault(key, [0, 0])
        tally[key][0] += int(ok)
        tally[key][1] += 1

    for r in results:
        group = GROUPS[r.check.kind]
        for category, ok in r.check.results.items():
            add(f"{group}.{category}", ok)
        add("all", r.check.passed)
        add("exact", r.check.results["exact"])
        spec = r.check.spec
        if spec.count > 1:
            add(f"count.counting[{spec.words[0]}]", r.check.results["counting"])
        if spec.position is not None:
            add(f"one.position[{spec.position}]", r.check.results["position"])
        if "relation" in r.check.results:
            add(f"two.relation[{spec.relation}]", r.check.results["relation"])
    return {k: {"accuracy": round(c / n, 4), "correct": c, "n": n} for k, (c, n) in sorted(tally.items())}


def grounding_table(results: list[SampleResult]) -> dict[str, dict]:
    """Mean IoU per word kind with counts and skip reasons: ``colour``, ``shape`` and ``all`` (both) over
    the prompts without a number, as before counting came; over the counting prompts (when there are
    any) ``number`` (the number word) and ``group`` (the colour and shape words, on the union of their
    objects: the counted group's, or the single object's)."""
    plain = [w for r in results if r.check.spec.count == 1 for w in r.words]
    counted = [w for r in results if r.check.spec.count > 1 for w in r.words]
    groups = {
        "colour": [w for w in plain if w["kind"] == "colour"],
        "shape": [w for w in plain if w["kind"] == "shape"],
        "all": plain,
        "number": [w for w in counted if w["kind"] == "number"],
        "group": [w for w in counted if w["kind"] != "number"],
    }
    return {
        kind: _mean_iou(records) for kind, records in groups.items() if records or kind in ("colour", "shape", "all")
    }


def _mean_iou(records: list[dict]) -> dict:
    """``{"mean_iou", "n", "skipped": {reason: count}}`` of grounding records."""
    ious = [w["iou"] for w in records if w["iou"] is not None]
    skipped: dict[str, int] = {}
    for w in records:
        if w["skipped"]:
            skipped[w["skipped"]] = skipped.get(w["skipped"], 0) + 1
    return {"mean_iou": round(float(np.mean(ious)), 4) if ious else None, "n": len(ious), "skipped": skipped}


def run_evaluation(pipe, settings: EvalSettings, trace=None, progress=None) -> tuple[list[SampleResult], float]:
    """All prompts in batches; returns the results and the seconds it took."""
    resolution = int(pipe.unet.config.sample_size)
    prompts = eval_prompts(settings.n, settings.sampling.seed, counting=settings.counting_prompts())
    batches = [prompts[i : i + settings.batch_size] for i in range(0, len(prompts), settings.batch_size)]
    start = time.perf_counter()
    results = []
    for batch in progress(batches) if progress else batches:
        results += evaluate_batch(pipe, batch, settings, resolution, trace)
    return results, time.perf_counter() - start
